#!/usr/bin/env python3
"""oslo.messaging reference peer for the Rust interop tests.

Run it with the python printed by ``setup-venv.sh`` (oslo.messaging 18.3.1).
Every subcommand uses the real oslo.messaging API over the transport URL given
with ``--url``, the threading executor, a private ``oslo_config.cfg.ConfigOpts``
instance (no config files, no CLI parsing by oslo) and oslo's defaults for
everything else.

stdout carries ONLY the protocol lines documented in README.md (JSON lines and
``READY``), each flushed as soon as it is written.  Python warnings, oslo logs
and anything a library might print go to stderr.

Exit codes: 0 = the command ran (for ``call`` the JSON says whether the remote
call succeeded), 2 = bad arguments, 1 = a ``cast`` that could not be sent
(an ``{"error": ...}`` line is printed) or an unexpected local failure.
"""

import argparse
import json
import logging
import signal
import sys
import threading
import time

# Keep the real stdout for protocol lines; anything else that prints goes to
# stderr so stdout stays machine-readable.
_OUT = sys.stdout
sys.stdout = sys.stderr
_OUT_LOCK = threading.Lock()

ACCESS_POLICIES = {'default': 'DefaultRPCAccessPolicy',
                   'explicit': 'ExplicitRPCAccessPolicy',
                   'legacy': 'LegacyRPCAccessPolicy'}
PRIORITIES = ('audit', 'debug', 'info', 'warn', 'error', 'critical', 'sample')
NOTIFY_PRIORITIES = PRIORITIES + ('warning',)


def emit_line(text):
    with _OUT_LOCK:
        _OUT.write(text + '\n')
        _OUT.flush()


def emit(obj):
    emit_line(json.dumps(obj, default=repr, sort_keys=True))


# --------------------------------------------------------------------------
# argument parsing (done before importing oslo so bad args fail fast, exit 2)
# --------------------------------------------------------------------------

def _number(text):
    try:
        return int(text)
    except ValueError:
        pass
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f'not a number: {text!r}')
    return value


def _json_value(text):
    try:
        return json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f'invalid JSON {text!r}: {exc}')


def _json_object(text):
    value = _json_value(text)
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f'expected a JSON object, got {text!r}')
    return value


_CALL_KEYS = {'method', 'kwargs', 'context', 'topic', 'server', 'namespace',
              'version', 'call_monitor_timeout'}


def _json_calls(text):
    value = _json_value(text)
    if not isinstance(value, list) or not all(
            isinstance(c, dict) and isinstance(c.get('method'), str)
            and set(c) <= _CALL_KEYS for c in value):
        raise argparse.ArgumentTypeError(
            f'expected a JSON list of call objects with a "method", got {text!r}')
    return value


def build_parser():
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument('--url', required=True,
                        help='transport_url, e.g. rabbit://guest:guest@127.0.0.1:5672/')
    common.add_argument('--log-level', default='WARNING', type=str.upper,
                        choices=['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'],
                        help='level for oslo/kombu logs on stderr (default WARNING)')

    p = argparse.ArgumentParser(prog='oslo_peer.py', description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest='cmd', required=True)

    s = sub.add_parser('server', parents=[common], help='run an RPC server')
    s.add_argument('--topic', required=True)
    s.add_argument('--server', required=True)
    s.add_argument('--exchange')
    s.add_argument('--rpc-ping-enabled', action='store_true',
                   help="oslo's rpc_ping_enabled: answer oslo_rpc_server_ping with 'pong'")
    s.add_argument('--access-policy', choices=sorted(ACCESS_POLICIES),
                   help="the dispatcher's access_policy (oslo default: default)")

    for name in ('call', 'cast'):
        c = sub.add_parser(name, parents=[common], help=f'RPC {name}')
        c.add_argument('--topic', required=True)
        c.add_argument('--server')
        c.add_argument('--exchange')
        c.add_argument('--namespace')
        c.add_argument('--version')
        c.add_argument('--context', type=_json_object, default={},
                       help='request context dict (JSON object); sent as _context_* keys')
        c.add_argument('--retry', type=int,
                       help='connection retries (oslo default: forever)')
        c.add_argument('--allowed-exmods', default='',
                       help='comma-separated allowed_remote_exmods: modules whose '
                            'exceptions a failed call rebuilds as klass(*args, **kwargs)')
        if name == 'call':
            c.add_argument('--timeout', type=_number,
                           help='reply timeout in seconds (oslo default: rpc_response_timeout=60)')
            c.add_argument('--call-monitor-timeout', type=_number,
                           help='call_monitor_timeout (sent as _timeout; server heartbeats every N/2 s)')
        else:
            c.add_argument('--fanout', action='store_true')
        c.add_argument('method')
        c.add_argument('kwargs', type=_json_object, metavar='KWARGS_JSON')

    cs = sub.add_parser('calls', parents=[common],
                        help='several RPC calls with one client; one line per call')
    cs.add_argument('--topic', required=True)
    cs.add_argument('--timeout', type=_number,
                    help='reply timeout in seconds (oslo default: rpc_response_timeout=60)')
    cs.add_argument('--allowed-exmods', default='',
                    help='comma-separated allowed_remote_exmods (see call)')
    cs.add_argument('calls', type=_json_calls, metavar='CALLS_JSON',
                    help='a JSON list of {"method", "kwargs"?, "context"?, and prepare() '
                         'options "topic"?, "server"?, "namespace"?, "version"?, '
                         '"call_monitor_timeout"?}')

    n = sub.add_parser('notify', parents=[common], help='send one notification')
    n.add_argument('--topic', required=True)
    n.add_argument('--priority', required=True, choices=NOTIFY_PRIORITIES)
    n.add_argument('--event-type', required=True)
    n.add_argument('--publisher-id', required=True)
    n.add_argument('--exchange',
                   help='exchange to publish to (oslo control_exchange, default "openstack")')
    n.add_argument('--context', type=_json_object,
                   help='context dict; sent as an oslo_context RequestContext '
                        '(redacted_copy().to_dict()) unless --raw-context')
    n.add_argument('--raw-context', action='store_true',
                   help='send the --context dict verbatim (wrapped in a minimal '
                        'context object so oslo does not drop it)')
    n.add_argument('--retry', type=int)
    n.add_argument('--driver', default='messagingv2',
                   choices=('messaging', 'messagingv2'),
                   help='notification driver: messaging sends format 1.0 (no '
                        'envelope), messagingv2 (default) the 2.0 envelope')
    n.add_argument('payload', type=_json_value, metavar='PAYLOAD_JSON')

    l = sub.add_parser('listen', parents=[common], help='run a notification listener')
    l.add_argument('--topic', required=True)
    l.add_argument('--pool')
    l.add_argument('--exchange')

    d = sub.add_parser('delete-queues', parents=[common],
                       help='delete queues (test clean-up); missing ones are fine')
    d.add_argument('queues', nargs='+', metavar='QUEUE')

    e = sub.add_parser('delete-exchanges', parents=[common],
                       help='delete exchanges (test clean-up); missing ones are fine')
    e.add_argument('exchanges', nargs='+', metavar='EXCHANGE')
    return p


# --------------------------------------------------------------------------
# oslo helpers
# --------------------------------------------------------------------------

def setup_logging(level):
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')
    logging.captureWarnings(False)  # warnings module already writes to stderr


def make_conf():
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    # Parse nothing: no CLI args, no config files or dirs.
    conf(args=[], project='oslo-peer', default_config_files=[],
         default_config_dirs=[])
    # oslo.messaging 18.3.1 registers its [oslo_messaging_tracing] and
    # [oslo_messaging_metrics] options only on the global cfg.CONF, yet
    # RPCClient.call/cast and RPCServer read them from the transport's conf:
    # with a private ConfigOpts every call/cast dies with
    # NoSuchOptError('oslo_messaging_tracing'). Register them here (defaults:
    # tracing and metrics disabled).
    from oslo_messaging._metrics import client as metrics_client
    from oslo_messaging._tracing import client as tracing_client
    conf.register_opts(tracing_client.oslo_messaging_tracing,
                       group='oslo_messaging_tracing')
    conf.register_opts(metrics_client.oslo_messaging_metrics,
                       group='oslo_messaging_metrics')
    return conf


def error_json(exc):
    return {'error': {
        'type': type(exc).__name__,
        'module': type(exc).__module__,
        'message': str(exc),
        'exc_type': getattr(exc, 'exc_type', None),
        'value': getattr(exc, 'value', None),
        # what a rebuilt exception (allowed_remote_exmods) was built with
        'args': list(exc.args),
        'kwargs': getattr(exc, 'kwargs', None),
        'classes': [f'{c.__module__}.{c.__name__}' for c in type(exc).__mro__],
    }}


def wait_for_signal():
    """Block the main thread until SIGTERM or SIGINT."""
    stop = threading.Event()

    def handler(signum, frame):
        logging.getLogger('oslo_peer').info('signal %d received, stopping', signum)
        stop.set()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
    return stop


def run_until_signal(stop, server, transport):
    emit_line('READY')
    while not stop.wait(0.2):
        pass
    server.stop()
    server.wait()
    transport.cleanup()


# --------------------------------------------------------------------------
# subcommands
# --------------------------------------------------------------------------

def cmd_server(args):
    import oslo_messaging

    def record(method, ctxt, **kwargs):
        emit({'method': method, 'args': kwargs, 'ctxt': ctxt})

    class DefaultEndpoint:
        target = oslo_messaging.Target(version='1.0')

        def add(self, ctxt, a, b):
            record('add', ctxt, a=a, b=b)
            return a + b

        def echo(self, ctxt, value):
            record('echo', ctxt, value=value)
            return value

        def fail(self, ctxt, message):
            record('fail', ctxt, message=message)
            raise ValueError(message)

        def sleep(self, ctxt, seconds):
            record('sleep', ctxt, seconds=seconds)
            time.sleep(seconds)
            return seconds

        def whoami(self, ctxt):
            record('whoami', ctxt)
            return dict(ctxt)

    class Ns1Endpoint:
        target = oslo_messaging.Target(namespace='ns1', version='2.1')

        def ns_echo(self, ctxt, value):
            record('ns_echo', ctxt, value=value)
            return {'ns': 'ns1', 'value': value}

    class ParityEndpoint:
        """Namespace 'parity': remote errors with args/kwargs, access policies."""
        target = oslo_messaging.Target(namespace='parity', version='1.0')

        @oslo_messaging.expose
        def raise_error(self, ctxt, module, cls, args=(), kwargs=None):
            record('raise_error', ctxt, module=module, cls=cls, args=args,
                   kwargs=kwargs)
            import importlib
            klass = getattr(importlib.import_module(module), cls)
            raise klass(*args, **(kwargs or {}))

        @oslo_messaging.expose
        def exposed_echo(self, ctxt, value):
            return value

        def echo(self, ctxt, value):
            return value

        def _private_echo(self, ctxt, value):
            return value

        @oslo_messaging.expose
        def _exposed_private_echo(self, ctxt, value):
            return value

    stop = wait_for_signal()
    conf = make_conf()
    if args.rpc_ping_enabled:
        # The RPC dispatcher reads rpc_ping_enabled from the global cfg.CONF,
        # not from the transport's conf.
        from oslo_config import cfg
        from oslo_messaging.rpc import dispatcher as rpc_dispatcher
        cfg.CONF.register_opts(rpc_dispatcher._dispatcher_opts)
        cfg.CONF.set_override('rpc_ping_enabled', True)
    server_kw = {}
    if args.access_policy:
        from oslo_messaging.rpc import dispatcher as rpc_dispatcher
        server_kw['access_policy'] = getattr(
            rpc_dispatcher, ACCESS_POLICIES[args.access_policy])
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url)
    target_kw = dict(topic=args.topic, server=args.server)
    if args.exchange:
        target_kw['exchange'] = args.exchange
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(**target_kw),
        [DefaultEndpoint(), Ns1Endpoint(), ParityEndpoint()], executor='threading',
        **server_kw)
    server.start()
    run_until_signal(stop, server, transport)
    return 0


def _rpc_client(args):
    import oslo_messaging
    conf = make_conf()
    exmods = [m for m in getattr(args, 'allowed_exmods', '').split(',') if m]
    transport = oslo_messaging.get_rpc_transport(conf, url=args.url,
                                                 allowed_remote_exmods=exmods)
    client = oslo_messaging.get_rpc_client(
        transport, oslo_messaging.Target(topic=args.topic))
    prep = {}
    for name in ('server', 'exchange', 'namespace', 'version', 'retry',
                 'timeout', 'call_monitor_timeout'):
        value = getattr(args, name, None)
        if value is not None:
            prep[name] = value
    if getattr(args, 'fanout', False):
        prep['fanout'] = True
    return transport, client.prepare(**prep)


def cmd_call(args):
    transport, cctxt = _rpc_client(args)
    try:
        try:
            result = cctxt.call(args.context, args.method, **args.kwargs)
        except Exception as exc:  # the JSON reports it
            logging.getLogger('oslo_peer').debug('call failed', exc_info=True)
            emit(error_json(exc))
        else:
            emit({'result': result})
    finally:
        transport.cleanup()
    return 0


def cmd_calls(args):
    """One client, several calls in order; prints one call-style line per call."""
    transport, cctxt = _rpc_client(args)
    try:
        for spec in args.calls:
            prep = {k: spec[k] for k in ('topic', 'server', 'namespace', 'version',
                                         'call_monitor_timeout') if k in spec}
            client = cctxt.prepare(**prep) if prep else cctxt
            try:
                result = client.call(spec.get('context', {}), spec['method'],
                                     **spec.get('kwargs', {}))
            except Exception as exc:  # the JSON reports it
                logging.getLogger('oslo_peer').debug('call failed', exc_info=True)
                emit(error_json(exc))
            else:
                emit({'result': result})
    finally:
        transport.cleanup()
    return 0


def cmd_cast(args):
    transport, cctxt = _rpc_client(args)
    try:
        cctxt.cast(args.context, args.method, **args.kwargs)
    except Exception as exc:  # e.g. broker unreachable with --retry N
        logging.getLogger('oslo_peer').debug('cast failed', exc_info=True)
        emit(error_json(exc))
        return 1
    else:
        emit({'cast': 'ok'})
    finally:
        transport.cleanup()
    return 0


class _RawContext:
    """Minimal context object: oslo.messaging drops plain-dict notification
    contexts (_sanitize_context) but keeps objects with redacted_copy();
    the amqp driver then sends to_dict() as _context_* keys."""

    def __init__(self, values):
        self._values = dict(values)

    def redacted_copy(self):
        return self

    def to_dict(self):
        return dict(self._values)


def cmd_notify(args):
    import oslo_messaging
    if args.exchange:
        oslo_messaging.set_transport_defaults(control_exchange=args.exchange)
    conf = make_conf()
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    if args.context is None:
        ctxt = {}
    elif args.raw_context:
        ctxt = _RawContext(args.context)
    else:
        from oslo_context import context as oslo_context
        ctxt = oslo_context.RequestContext.from_dict(args.context)
    kw = {}
    if args.retry is not None:
        kw['retry'] = args.retry
    notifier = oslo_messaging.Notifier(transport, publisher_id=args.publisher_id,
                                       driver=args.driver, topics=[args.topic],
                                       **kw)
    try:
        getattr(notifier, args.priority)(ctxt, args.event_type, args.payload)
        emit({'notified': 'ok'})
    finally:
        transport.cleanup()
    return 0


def cmd_listen(args):
    import oslo_messaging

    class Endpoint:
        pass

    def make_handler(priority):
        def handler(self, ctxt, publisher_id, event_type, payload, metadata):
            emit({'priority': priority, 'publisher_id': publisher_id,
                  'event_type': event_type, 'payload': payload,
                  'metadata': metadata, 'ctxt': ctxt})
            return None  # == NotificationResult.HANDLED
        handler.__name__ = priority
        return handler

    for prio in PRIORITIES:
        setattr(Endpoint, prio, make_handler(prio))

    stop = wait_for_signal()
    conf = make_conf()
    transport = oslo_messaging.get_notification_transport(conf, url=args.url)
    target_kw = dict(topic=args.topic)
    if args.exchange:
        target_kw['exchange'] = args.exchange
    listener = oslo_messaging.get_notification_listener(
        transport, [oslo_messaging.Target(**target_kw)], [Endpoint()],
        executor='threading', allow_requeue=False, pool=args.pool)
    listener.start()
    run_until_signal(stop, listener, transport)
    return 0


def _delete(args, names, delete):
    """Deletes each name through kombu with `delete(channel, name)`; missing ones are
    fine. Prints {"deleted": N}."""
    import kombu
    url = args.url.replace('rabbit://', 'amqp://', 1)
    deleted = 0
    with kombu.Connection(url) as connection:
        for name in names:
            channel = connection.channel()
            try:
                delete(channel, name)
                deleted += 1
            except Exception:  # a missing one closes the channel: take a new one
                pass
            finally:
                try:
                    channel.close()
                except Exception:
                    pass
    emit({'deleted': deleted})
    return 0


def cmd_delete_queues(args):
    """Deletes the named queues through kombu; prints {"deleted": N}."""
    return _delete(args, args.queues, lambda channel, name: channel.queue_delete(name))


def cmd_delete_exchanges(args):
    """Deletes the named exchanges through kombu; prints {"deleted": N}."""
    return _delete(args, args.exchanges,
                   lambda channel, name: channel.exchange_delete(name))


COMMANDS = {'server': cmd_server, 'call': cmd_call, 'calls': cmd_calls, 'cast': cmd_cast,
            'notify': cmd_notify, 'listen': cmd_listen, 'delete-queues': cmd_delete_queues,
            'delete-exchanges': cmd_delete_exchanges}


def main(argv=None):
    args = build_parser().parse_args(argv)  # exits 2 on bad arguments
    setup_logging(args.log_level)
    return COMMANDS[args.cmd](args)


if __name__ == '__main__':
    sys.exit(main())
