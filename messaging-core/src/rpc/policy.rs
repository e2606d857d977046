//! [`RpcAccessPolicy`]: which endpoint methods RPC callers may invoke (oslo's
//! `access_policy`), with oslo's three policies.

use std::fmt;

use super::endpoint::Endpoint;

/// Decides which endpoint methods may be invoked over RPC (oslo's
/// `RPCAccessPolicyBase`).
///
/// The dispatcher asks the policy about each endpoint that serves the request's
/// namespace and version and has the method, in order; the first endpoint whose
/// method the policy allows runs it. A method the policy refuses is treated as absent:
/// the caller gets `NoSuchMethod` (as in oslo, where a refused method counts as
/// "found a compatible endpoint" and ends in `NoSuchMethod`), never a distinct error
/// that would tell a prober the method exists.
///
/// Any `Fn(&Endpoint, &str) -> bool` is a policy. It is called once per request and
/// endpoint tried, on the executor's polling thread: it must be quick and must not
/// block.
///
/// # Examples
///
/// ```
/// use messaging_core::rpc::{Endpoint, HandlerError, NoArgs, RpcDispatcher};
///
/// // Only the `admin` namespace's methods whose names start with `get_`.
/// let read_only = |endpoint: &Endpoint, method: &str| {
///     endpoint.namespace() != Some("admin") || method.starts_with("get_")
/// };
/// let admin = Endpoint::new()
///     .with_namespace("admin")
///     .method("get_quota", |_ctx, _: NoArgs| Ok::<_, HandlerError>(10))
///     .method("set_quota", |_ctx, _: NoArgs| Ok::<_, HandlerError>(()));
/// let dispatcher = RpcDispatcher::builder(vec![admin])
///     .access_policy(read_only)
///     .build()
///     .unwrap();
/// # let _ = dispatcher;
/// ```
pub trait RpcAccessPolicy: Send + Sync + 'static {
    /// Whether `method` of `endpoint` may be invoked over RPC. `endpoint` has the
    /// method.
    fn is_allowed(&self, endpoint: &Endpoint, method: &str) -> bool;
}

impl<F> RpcAccessPolicy for F
where
    F: Fn(&Endpoint, &str) -> bool + Send + Sync + 'static,
{
    fn is_allowed(&self, endpoint: &Endpoint, method: &str) -> bool {
        self(endpoint, method)
    }
}

/// oslo's `DefaultRPCAccessPolicy`, the default: every method except those whose
/// names start with `_`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DefaultRpcAccessPolicy;

impl RpcAccessPolicy for DefaultRpcAccessPolicy {
    fn is_allowed(&self, _endpoint: &Endpoint, method: &str) -> bool {
        !method.starts_with('_')
    }
}

/// oslo's `ExplicitRPCAccessPolicy`: only methods marked with
/// [`Endpoint::expose`] (oslo's `@oslo_messaging.expose`), private names included.
///
/// As in oslo, the ping method [`rpc_ping_enabled`] adds is not exposed, so it is
/// refused under this policy.
///
/// [`rpc_ping_enabled`]: super::RpcDispatcherBuilder::rpc_ping_enabled
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ExplicitRpcAccessPolicy;

impl RpcAccessPolicy for ExplicitRpcAccessPolicy {
    fn is_allowed(&self, endpoint: &Endpoint, method: &str) -> bool {
        endpoint.is_exposed(method)
    }
}

/// oslo's `LegacyRPCAccessPolicy`: every registered method, those whose names start
/// with `_` included. For services that relied on exposing private methods.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LegacyRpcAccessPolicy;

impl RpcAccessPolicy for LegacyRpcAccessPolicy {
    fn is_allowed(&self, _endpoint: &Endpoint, _method: &str) -> bool {
        true
    }
}

/// A policy behind an `Arc`, with a `Debug` that names its type.
#[derive(Clone)]
pub(crate) struct SharedPolicy {
    pub(crate) policy: std::sync::Arc<dyn RpcAccessPolicy>,
    pub(crate) name: &'static str,
}

impl SharedPolicy {
    pub(crate) fn new<P: RpcAccessPolicy>(policy: P) -> Self {
        SharedPolicy {
            policy: std::sync::Arc::new(policy),
            name: std::any::type_name::<P>(),
        }
    }
}

impl fmt::Debug for SharedPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rpc::{HandlerError, NoArgs};

    fn endpoint() -> Endpoint {
        Endpoint::new()
            .method("open", |_ctx, _: NoArgs| Ok::<_, HandlerError>(1))
            .method("_hidden", |_ctx, _: NoArgs| Ok::<_, HandlerError>(2))
            .method("shown", |_ctx, _: NoArgs| Ok::<_, HandlerError>(3))
            .expose("shown")
            .expose("_hidden")
    }

    #[test]
    fn the_three_oslo_policies_decide_as_oslo_does() {
        let e = endpoint();
        let decide =
            |p: &dyn RpcAccessPolicy| ["open", "_hidden", "shown"].map(|m| p.is_allowed(&e, m));
        assert_eq!(decide(&DefaultRpcAccessPolicy), [true, false, true]);
        assert_eq!(decide(&ExplicitRpcAccessPolicy), [false, true, true]);
        assert_eq!(decide(&LegacyRpcAccessPolicy), [true, true, true]);
        let closure = |_: &Endpoint, m: &str| m == "open";
        assert_eq!(decide(&closure), [true, false, false]);
    }
}
