//! Masking secrets in a payload before the `log` driver writes it, as oslo's log
//! driver does with `oslo_utils.strutils.mask_dict_password`.

use serde_json::Value;

/// What a masked value becomes.
pub(crate) const MASK: &str = "***";

/// oslo.utils 10.2.0's `_SANITIZE_KEYS`: a key that contains one of these (compared
/// lower case) holds a secret.
const SANITIZE_KEYS: &[&str] = &[
    "adminpass",
    "admin_pass",
    "password",
    "admin_password",
    "auth_token",
    "new_pass",
    "auth_password",
    "secret_uuid",
    "secret",
    "sys_pswd",
    "token",
    "configdrive",
    "chappassword",
    "encrypted_key",
    "private_key",
    "fernetkey",
    "sslkey",
    "passphrase",
    "cephclusterfsid",
    "octaviaheartbeatkey",
    "rabbitcookie",
    "cephmanilaclientkey",
    "pacemakerremoteauthkey",
    "designaterndckey",
    "cephadminkey",
    "heatauthencryptionkey",
    "cephclientkey",
    "keystonecredential",
    "barbicansimplecryptokek",
    "cephrgwkey",
    "swifthashsuffix",
    "migrationsshkey",
    "cephmdskey",
    "cephmonkey",
    "chapsecret",
];

fn is_secret_key(key: &str) -> bool {
    let key = key.to_lowercase();
    SANITIZE_KEYS.iter().any(|secret| key.contains(secret))
}

/// Replaces, at any depth, the value of every key that names a secret with
/// [`MASK`]: oslo's `mask_dict_password` by key, stricter in one way (the value of a
/// secret key is masked whatever it is, where oslo searches a nested mapping
/// instead, so `{"token": {"id": ...}}` keeps its id there) and laxer in another
/// (oslo also masks `password=...`-like text inside string values; that is not done
/// here).
pub(crate) fn mask_secrets(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, item) in map.iter_mut() {
                if is_secret_key(key) {
                    *item = Value::String(MASK.to_owned());
                } else {
                    mask_secrets(item);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(mask_secrets),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn masks_secret_keys_at_any_depth_as_oslo_does() {
        let mut payload = json!({
            "user": "admin",
            "adminPass": "d81juxmEW_",
            "nested": {"db_password": "p", "host": "h", "token": {"id": "t"}},
            "list": [{"ssh_private_key": "k"}, "plain", 3],
            "count": 2,
        });
        mask_secrets(&mut payload);
        assert_eq!(
            payload,
            json!({
                "user": "admin",
                "adminPass": "***",
                "nested": {"db_password": "***", "host": "h", "token": "***"},
                "list": [{"ssh_private_key": "***"}, "plain", 3],
                "count": 2,
            })
        );
        let mut scalar = json!("password");
        mask_secrets(&mut scalar);
        assert_eq!(scalar, json!("password"));
    }
}
