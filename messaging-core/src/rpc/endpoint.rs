//! [`Endpoint`]: a namespace and version with typed handlers.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::error::HandlerError;
use crate::codec::{Codec, CodecKind};
use crate::dispatch::BoxFuture;
use crate::message::Context;

type Blocking = Arc<dyn Fn(Context, Bytes, CodecKind) -> Result<Bytes, HandlerError> + Send + Sync>;
type Async =
    Arc<dyn Fn(Context, Bytes, CodecKind) -> BoxFuture<Result<Bytes, HandlerError>> + Send + Sync>;

/// A registered handler, with its argument and result types erased.
#[derive(Clone)]
pub(crate) enum Method {
    Blocking(Blocking),
    Async(Async),
}

/// Arguments for a method that takes none: `{}` in JSON, nothing in bincode.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NoArgs {}

fn decode_args<A: DeserializeOwned>(
    method: &str,
    codec: CodecKind,
    body: &[u8],
) -> Result<A, HandlerError> {
    codec.decode(body).map_err(|e| {
        HandlerError::new(
            "TypeError",
            format!("invalid arguments for {method}(): {e}"),
        )
        .with_module("builtins")
        .expected()
    })
}

fn encode_result<R: Serialize>(
    method: &str,
    codec: CodecKind,
    result: &R,
) -> Result<Bytes, HandlerError> {
    codec.encode(result).map_err(|e| {
        HandlerError::new(
            "EncodeError",
            format!("the result of {method}() cannot be encoded: {e}"),
        )
    })
}

/// A set of RPC methods under one namespace and version (oslo's endpoint object with
/// its `target`).
///
/// Handlers take the request [`Context`] (owned: read it, extend it, pass it on to
/// nested calls) and their arguments as one serde type matching oslo's keyword
/// arguments (`{"a": 1, "b": 2}` ↔ `struct Add { a: i64, b: i64 }`). They return
/// `Result<R, E>` with `R: Serialize` and `E` convertible to [`HandlerError`].
/// [`method`](Endpoint::method) handlers may block (they run where blocking is
/// allowed); [`async_method`](Endpoint::async_method) handlers are awaited.
///
/// # Examples
///
/// ```
/// use serde::Deserialize;
/// use messaging_core::rpc::{Endpoint, HandlerError, NoArgs};
///
/// #[derive(Deserialize)]
/// struct Add { a: i64, b: i64 }
///
/// let endpoint = Endpoint::new()
///     .with_namespace("math")
///     .with_version("1.2")
///     .method("add", |_ctx, args: Add| Ok::<_, HandlerError>(args.a + args.b))
///     .method("ping", |_ctx, _: NoArgs| Ok::<_, HandlerError>("pong"))
///     .async_method("later", |_ctx, args: Add| async move { Ok::<_, HandlerError>(args.a) });
/// assert_eq!(endpoint.method_names().count(), 3);
/// ```
#[derive(Clone)]
pub struct Endpoint {
    pub(crate) namespace: Option<String>,
    pub(crate) version: String,
    pub(crate) legacy_namespaces: Vec<String>,
    pub(crate) methods: HashMap<String, Method>,
    exposed: HashSet<String>,
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::new()
    }
}

impl Endpoint {
    /// An endpoint in the null namespace at version `1.0`, with no methods.
    pub fn new() -> Self {
        Endpoint {
            namespace: None,
            version: "1.0".to_owned(),
            legacy_namespaces: Vec::new(),
            methods: HashMap::new(),
            exposed: HashSet::new(),
        }
    }

    /// Sets the namespace.
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = Some(namespace.into());
        self
    }

    /// Sets the implemented version (`major.minor[.revision]`).
    pub fn with_version(mut self, version: impl Into<String>) -> Self {
        self.version = version.into();
        self
    }

    /// Further namespaces this endpoint also serves.
    pub fn with_legacy_namespaces<I, S>(mut self, namespaces: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.legacy_namespaces = namespaces.into_iter().map(Into::into).collect();
        self
    }

    /// Registers a handler that may block. Registering a name twice replaces the first.
    pub fn method<A, R, E, F>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(Context, A) -> Result<R, E> + Send + Sync + 'static,
        A: DeserializeOwned + 'static,
        R: Serialize + 'static,
        E: Into<HandlerError> + 'static,
    {
        let method = name.to_owned();
        let invoke: Blocking = Arc::new(move |ctx, body, codec| {
            let args = decode_args::<A>(&method, codec, &body)?;
            let result = handler(ctx, args).map_err(Into::into)?;
            encode_result(&method, codec, &result)
        });
        self.methods
            .insert(name.to_owned(), Method::Blocking(invoke));
        self
    }

    /// Registers an async handler. Registering a name twice replaces the first.
    pub fn async_method<A, R, E, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        F: Fn(Context, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, E>> + Send + 'static,
        A: DeserializeOwned + Send + 'static,
        R: Serialize + Send + 'static,
        E: Into<HandlerError> + 'static,
    {
        let method: Arc<str> = name.into();
        let handler = Arc::new(handler);
        let invoke: Async = Arc::new(move |ctx, body, codec| {
            let (method, handler) = (method.clone(), handler.clone());
            Box::pin(async move {
                let args = decode_args::<A>(&method, codec, &body)?;
                let result = handler(ctx, args).await.map_err(Into::into)?;
                encode_result(&method, codec, &result)
            })
        });
        self.methods.insert(name.to_owned(), Method::Async(invoke));
        self
    }

    /// Marks the method `name` as exposed (oslo's `@oslo_messaging.expose`), for the
    /// [`ExplicitRpcAccessPolicy`](super::ExplicitRpcAccessPolicy), which dispatches
    /// only exposed methods. Other policies ignore the mark. It may come before or
    /// after the method is registered; marking a name no method has exposes nothing.
    ///
    /// # Examples
    ///
    /// ```
    /// use messaging_core::rpc::{Endpoint, HandlerError, NoArgs};
    ///
    /// let endpoint = Endpoint::new()
    ///     .method("status", |_ctx, _: NoArgs| Ok::<_, HandlerError>("ok"))
    ///     .method("reboot", |_ctx, _: NoArgs| Ok::<_, HandlerError>(()))
    ///     .expose("status");
    /// assert!(endpoint.is_exposed("status"));
    /// assert!(!endpoint.is_exposed("reboot"));
    /// ```
    pub fn expose(mut self, name: &str) -> Self {
        self.exposed.insert(name.to_owned());
        self
    }

    /// Whether `name` is a registered method marked with
    /// [`expose`](Endpoint::expose).
    pub fn is_exposed(&self, name: &str) -> bool {
        self.methods.contains_key(name) && self.exposed.contains(name)
    }

    /// Whether a method `name` is registered.
    pub fn has_method(&self, name: &str) -> bool {
        self.methods.contains_key(name)
    }

    /// The names of the registered methods.
    pub fn method_names(&self) -> impl Iterator<Item = &str> {
        self.methods.keys().map(String::as_str)
    }

    /// The implemented version.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The namespace.
    pub fn namespace(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    pub(crate) fn serves(&self, namespace: Option<&str>, version: &str) -> bool {
        let namespace_ok = self.namespace.as_deref() == namespace
            || namespace.is_some_and(|ns| self.legacy_namespaces.iter().any(|l| l == ns));
        namespace_ok && super::version::version_is_compatible(&self.version, version)
    }
}

impl fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut names: Vec<&str> = self.method_names().collect();
        names.sort_unstable();
        let mut exposed: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| self.exposed.contains(*n))
            .collect();
        exposed.sort_unstable();
        f.debug_struct("Endpoint")
            .field("namespace", &self.namespace)
            .field("version", &self.version)
            .field("methods", &names)
            .field("exposed", &exposed)
            .finish()
    }
}
