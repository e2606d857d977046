//! The functional suite on the embedded in-memory transport.

messaging_testkit::functional_suite!(Some("memory:///functional".to_owned()));
