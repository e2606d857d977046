//! The RPC details Python peers rely on, at the dispatcher: access policies, the ping
//! endpoint, `client_timeout` in the handler's context, and errors' `args` and
//! `kwargs`.

use std::time::Duration;

use bytes::Bytes;
use serde_json::{Value, json};

use super::*;
use crate::codec::CodecKind;
use crate::dispatch::Dispatcher;
use crate::message::{Context, Message, Meta, RemoteError, RequestMeta};
use crate::reply::{ReplyEvent, reply_channel};
use crate::transport::IncomingMessage;

struct Request<'a> {
    method: &'a str,
    namespace: Option<&'a str>,
    args: Value,
    context: Context,
    monitor: Option<Duration>,
}

fn request(method: &str) -> Request<'_> {
    Request {
        method,
        namespace: None,
        args: json!({}),
        context: Context::new(),
        monitor: None,
    }
}

/// Dispatches one JSON call and returns its reply (heartbeats skipped).
fn call(dispatcher: &RpcDispatcher, request: Request<'_>) -> Result<Value, Box<RemoteError>> {
    let mut meta = RequestMeta::new(request.method);
    meta.namespace = request.namespace.map(str::to_owned);
    let message = Message::new(Bytes::from(request.args.to_string()))
        .with_meta(Meta::Request(meta))
        .with_codec(CodecKind::Json)
        .with_context(request.context);
    let (sender, mut receiver) = reply_channel();
    let incoming = IncomingMessage::new(message)
        .with_replier(sender)
        .with_client_timeout(request.monitor);
    dispatcher.dispatch(vec![incoming]).run();
    loop {
        match receiver.recv_timeout(Some(Duration::from_secs(10))) {
            Ok(ReplyEvent::Heartbeat) => continue,
            Ok(ReplyEvent::Reply(reply)) => {
                return reply
                    .map(|body| serde_json::from_slice(&body).unwrap())
                    .map_err(Box::new);
            }
            Err(e) => panic!("no reply: {e}"),
        }
    }
}

fn class(reply: Result<Value, Box<RemoteError>>) -> String {
    reply.expect_err("an error").class
}

fn answer(value: i64) -> impl Fn(Context, NoArgs) -> Result<i64, HandlerError> {
    move |_ctx, _| Ok(value)
}

// ===== access policies =====

#[test]
fn the_default_policy_refuses_private_names_at_build_and_never_dispatches_them() {
    let private = Endpoint::new().method("_secret", answer(1));
    let err = RpcDispatcher::new(vec![private.clone()]).unwrap_err();
    assert!(err.to_string().contains("_secret"), "{err}");
    let empty = Endpoint::new().method("", answer(1));
    assert!(RpcDispatcher::new(vec![empty]).is_err());

    let d = RpcDispatcher::new(vec![Endpoint::new().method("open", answer(1))]).unwrap();
    assert_eq!(call(&d, request("open")), Ok(json!(1)));
    assert_eq!(class(call(&d, request("_secret"))), NO_SUCH_METHOD);

    // Set explicitly, the default policy takes private methods and never calls them.
    let d = RpcDispatcher::builder(vec![private])
        .access_policy(DefaultRpcAccessPolicy)
        .build()
        .unwrap();
    assert_eq!(class(call(&d, request("_secret"))), NO_SUCH_METHOD);
}

#[test]
fn the_legacy_policy_dispatches_private_methods() {
    let d = RpcDispatcher::builder(vec![Endpoint::new().method("_secret", answer(7))])
        .access_policy(LegacyRpcAccessPolicy)
        .build()
        .unwrap();
    assert_eq!(call(&d, request("_secret")), Ok(json!(7)));
}

#[test]
fn the_explicit_policy_dispatches_exposed_methods_only_and_refusal_is_no_such_method() {
    let endpoint = Endpoint::new()
        .method("shown", answer(1))
        .method("hidden", answer(2))
        .method("_private_shown", answer(3))
        .method("_private_hidden", answer(4))
        .expose("shown")
        .expose("_private_shown");
    let d = RpcDispatcher::builder(vec![endpoint])
        .access_policy(ExplicitRpcAccessPolicy)
        .build()
        .unwrap();
    assert_eq!(call(&d, request("shown")), Ok(json!(1)));
    assert_eq!(call(&d, request("_private_shown")), Ok(json!(3)));
    assert_eq!(class(call(&d, request("_private_hidden"))), NO_SUCH_METHOD);
    let refused = call(&d, request("hidden")).unwrap_err();
    assert_eq!(
        (refused.class.as_str(), refused.module.as_str()),
        (NO_SUCH_METHOD, DISPATCHER_MODULE)
    );
    assert_eq!(
        refused.message,
        "Endpoint does not support RPC method hidden"
    );
    assert_eq!(refused.args, [json!(refused.message)]);
}

#[test]
fn a_refused_method_falls_through_to_a_later_endpoint_that_is_allowed() {
    let first = Endpoint::new().method("m", answer(1));
    let second = Endpoint::new().method("m", answer(2)).expose("m");
    let d = RpcDispatcher::builder(vec![first, second])
        .access_policy(ExplicitRpcAccessPolicy)
        .build()
        .unwrap();
    assert_eq!(call(&d, request("m")), Ok(json!(2)));
}

#[test]
fn a_closure_policy_sees_the_endpoint_and_the_method() {
    let admin = Endpoint::new()
        .with_namespace("admin")
        .method("get", answer(1))
        .method("set", answer(2));
    let policy = |e: &Endpoint, m: &str| e.namespace() != Some("admin") || m == "get";
    let d = RpcDispatcher::builder(vec![admin])
        .access_policy(policy)
        .build()
        .unwrap();
    let admin_call = |method| Request {
        namespace: Some("admin"),
        ..request(method)
    };
    assert_eq!(call(&d, admin_call("get")), Ok(json!(1)));
    assert_eq!(class(call(&d, admin_call("set"))), NO_SUCH_METHOD);
    assert_eq!(class(call(&d, request("get"))), UNSUPPORTED_VERSION);
}

// ===== ping =====

#[test]
fn ping_is_off_by_default_and_answers_pong_with_any_kwargs_when_enabled() {
    let endpoint = || Endpoint::new().method("m", answer(1));
    let off = RpcDispatcher::new(vec![endpoint()]).unwrap();
    assert_eq!(class(call(&off, request(PING_METHOD))), NO_SUCH_METHOD);

    let on = RpcDispatcher::builder(vec![endpoint()])
        .rpc_ping_enabled(true)
        .build()
        .unwrap();
    assert_eq!(on.endpoints().len(), 2, "the ping endpoint comes last");
    assert_eq!(call(&on, request(PING_METHOD)), Ok(json!("pong")));
    let with_kwargs = Request {
        args: json!({"anything": [1, 2], "more": null}),
        ..request(PING_METHOD)
    };
    assert_eq!(call(&on, with_kwargs), Ok(json!("pong")));
    let namespaced = Request {
        namespace: Some("other"),
        ..request(PING_METHOD)
    };
    assert_eq!(
        class(call(&on, namespaced)),
        UNSUPPORTED_VERSION,
        "oslo's ping endpoint is in the null namespace"
    );
}

#[test]
fn ping_obeys_the_access_policy_and_an_endpoints_own_ping_wins() {
    let explicit = RpcDispatcher::builder(vec![Endpoint::new()])
        .access_policy(ExplicitRpcAccessPolicy)
        .rpc_ping_enabled(true)
        .build()
        .unwrap();
    assert_eq!(
        class(call(&explicit, request(PING_METHOD))),
        NO_SUCH_METHOD,
        "oslo's PingEndpoint is not exposed"
    );

    let own = Endpoint::new().method(PING_METHOD, |_ctx, _: NoArgs| Ok::<_, HandlerError>("mine"));
    let d = RpcDispatcher::builder(vec![own])
        .rpc_ping_enabled(true)
        .build()
        .unwrap();
    assert_eq!(d.endpoints().len(), 1, "no ping endpoint added");
    assert_eq!(call(&d, request(PING_METHOD)), Ok(json!("mine")));
}

// ===== client_timeout =====

#[test]
fn the_handler_context_carries_client_timeout_as_oslo_does() {
    let endpoint = Endpoint::new()
        .method("ctx", |ctx: Context, _: NoArgs| Ok::<_, HandlerError>(ctx))
        .method("timeout", |ctx: Context, _: NoArgs| {
            Ok::<_, HandlerError>(ctx.client_timeout().map(|t| t.as_millis() as u64))
        });
    let d = RpcDispatcher::new(vec![endpoint]).unwrap();
    let with = |method, monitor| Request {
        monitor,
        ..request(method)
    };
    let mut caller = Context::new();
    caller.insert("user", "u1");
    caller.insert(CLIENT_TIMEOUT, "forged");
    let none = Request {
        context: caller,
        ..request("ctx")
    };
    assert_eq!(
        call(&d, none),
        Ok(json!({"user": "u1", "client_timeout": null})),
        "the request's own value replaces a context key of the same name"
    );
    let seven = call(&d, with("ctx", Some(Duration::from_secs(7)))).unwrap();
    assert_eq!(
        seven["client_timeout"].to_string(),
        "7",
        "whole seconds: {seven}"
    );
    let half = call(&d, with("ctx", Some(Duration::from_millis(2500)))).unwrap();
    assert_eq!(half["client_timeout"], json!(2.5));
    assert_eq!(
        call(&d, with("timeout", Some(Duration::from_millis(2500)))),
        Ok(json!(2500))
    );
    assert_eq!(call(&d, with("timeout", None)), Ok(Value::Null));
}

// ===== remote errors =====

#[test]
fn a_handler_errors_args_and_kwargs_reach_the_caller() {
    let endpoint = Endpoint::new()
        .method("quota", |_ctx, _: NoArgs| -> Result<(), HandlerError> {
            Err(HandlerError::new("QuotaExceeded", "over quota")
                .with_module("nova.exception")
                .with_kwarg("overs", json!(["cores"]))
                .with_kwargs([("allowed", 4)]))
        })
        .method(
            "positional",
            |_ctx, _: NoArgs| -> Result<(), HandlerError> {
                Err(HandlerError::new("Conflict", "(409, 'taken')")
                    .with_args([json!(409), json!("taken")]))
            },
        )
        .method("plain", |_ctx, _: NoArgs| -> Result<(), HandlerError> {
            Err(HandlerError::new("ValueError", "bad").with_module("builtins"))
        });
    let d = RpcDispatcher::new(vec![endpoint]).unwrap();
    let quota = call(&d, request("quota")).unwrap_err();
    assert_eq!(quota.args, [json!("over quota")]);
    assert_eq!(
        Value::Object(quota.kwargs),
        json!({"overs": ["cores"], "allowed": 4})
    );
    let positional = call(&d, request("positional")).unwrap_err();
    assert_eq!(positional.args, [json!(409), json!("taken")]);
    assert!(positional.kwargs.is_empty());
    let plain = call(&d, request("plain")).unwrap_err();
    assert_eq!((plain.args, plain.kwargs.len()), (vec![json!("bad")], 0));
}
