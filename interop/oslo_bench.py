#!/usr/bin/env python3
"""Benchmark of the real Python oslo.messaging (18.3.1) on RabbitMQ.

Run it with the python printed by ``setup-venv.sh``.  It measures what
docs/performance-baselines ("oslo.messaging 18.3.1 (measuring script)")
measured, so the Rust transport can be compared side by side:

* call:   ``warmup`` untimed calls, then N sequential
          ``call(ctxt, 'echo', value=<payload>)``, each timed;
* cast:   N ``cast(ctxt, 'count', value=<payload>)`` while the server
          consumes; end-to-end = first send -> the server's last receipt;
* notify: a Notifier (driver 'messaging') sends N
          ``info(ctxt, 'bench.event', {'value': <payload>})`` while a
          notification listener consumes; same end-to-end method.

The RPC server and the notification listener (threading executor, oslo
defaults otherwise) run in a SEPARATE process (this script, hidden ``serve``
subcommand) so the client and the server do not share a GIL.  Every run uses
its own topic (``oslo_bench_<uuid hex>``) and deletes the queues it created
at the end.

stdout carries exactly one line: a JSON object (also on failure, then with an
``"error"`` key).  Progress, warnings and oslo/kombu logs go to stderr.
Exit codes: 0 = all selected measurements done, 1 = a failure (server not
ready within 30 s or died, a call failed, not every cast/notification arrived
within --timeout), 2 = bad arguments.
"""

import argparse
import json
import math
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import uuid
import warnings

# Keep the real stdout for the single JSON line; anything else that prints
# goes to stderr so stdout stays machine-readable.
_OUT = sys.stdout
sys.stdout = sys.stderr

# oslo.messaging 18.3.1 / eventlet / oslo.service emit deprecation warnings at
# import time and for executor='threading' (eventlet's is a plain Warning
# subclass); they are noise here.
warnings.filterwarnings('ignore', category=DeprecationWarning)
warnings.filterwarnings('ignore', message=r'\s*Eventlet is deprecated')

URL_ENV = 'OSLO_BENCH_URL'  # the server process gets the URL here, not in argv
SERVER_NAME = 'bench'
READY_TIMEOUT = 30.0        # server process start -> READY line
STOP_TIMEOUT = 30.0         # SIGTERM -> server process exit
PHASES = ('call', 'cast', 'notify')


def log(msg):
    sys.stderr.write(f'[oslo_bench] {msg}\n')
    sys.stderr.flush()


class BenchError(Exception):
    """A failure that ends the run with exit code 1."""


# --------------------------------------------------------------------------
# arguments
# --------------------------------------------------------------------------

def _positive_int(text):
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f'must be >= 1: {text}')
    return value


def _non_negative_int(text):
    value = int(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f'must be >= 0: {text}')
    return value


def _phases(text):
    names = [p.strip() for p in text.split(',') if p.strip()]
    bad = [p for p in names if p not in PHASES]
    if bad or not names:
        raise argparse.ArgumentTypeError(
            f'--only takes a comma-separated subset of {",".join(PHASES)}; got {text!r}')
    return set(names)


def build_parser():
    p = argparse.ArgumentParser(
        prog='oslo_bench.py', description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--url', required=True,
                   help='transport_url, e.g. rabbit://guest:guest@127.0.0.1:5672/')
    p.add_argument('--payload', type=_non_negative_int, default=100,
                   help='payload string length in bytes (default 100)')
    p.add_argument('--calls', type=_positive_int, default=2000,
                   help='timed sequential calls (default 2000)')
    p.add_argument('--warmup', type=_non_negative_int, default=50,
                   help='untimed calls before the timed ones (default 50)')
    p.add_argument('--casts', type=_positive_int, default=20000,
                   help='casts (default 20000)')
    p.add_argument('--notifications', type=_positive_int, default=20000,
                   help='info notifications (default 20000)')
    p.add_argument('--only', type=_phases, default=set(PHASES),
                   help='comma-separated subset of call,cast,notify (default all)')
    p.add_argument('--timeout', type=float, default=120.0,
                   help='seconds to wait, after the last cast/notification was sent, '
                        'for the server to have received them all (default 120)')
    p.add_argument('--rpc-timeout', type=float, default=30.0,
                   help='timeout of each RPC call in seconds (default 30)')
    p.add_argument('--log-level', default='WARNING', type=str.upper,
                   choices=['DEBUG', 'INFO', 'WARNING', 'ERROR', 'CRITICAL'],
                   help='level for oslo/kombu logs on stderr (default WARNING)')
    return p


def build_serve_parser():
    p = argparse.ArgumentParser(prog='oslo_bench.py serve')
    p.add_argument('--topic', required=True)
    p.add_argument('--notify-topic', required=True)
    p.add_argument('--log-level', default='WARNING')
    return p


# --------------------------------------------------------------------------
# oslo helpers (same setup as oslo_peer.py)
# --------------------------------------------------------------------------

def setup_logging(level):
    import logging
    logging.basicConfig(stream=sys.stderr, level=level.upper(),
                        format='%(asctime)s %(levelname)s %(name)s: %(message)s')


def make_conf():
    from oslo_config import cfg
    conf = cfg.ConfigOpts()
    # Parse nothing: no CLI args, no config files or dirs.
    conf(args=[], project='oslo-bench', default_config_files=[],
         default_config_dirs=[])
    # oslo.messaging 18.3.1 registers [oslo_messaging_tracing] and
    # [oslo_messaging_metrics] only on the global cfg.CONF but reads them from
    # the transport's conf (see oslo_peer.py / README.md).
    from oslo_messaging._metrics import client as metrics_client
    from oslo_messaging._tracing import client as tracing_client
    conf.register_opts(tracing_client.oslo_messaging_tracing,
                       group='oslo_messaging_tracing')
    conf.register_opts(metrics_client.oslo_messaging_metrics,
                       group='oslo_messaging_metrics')
    return conf


def url_host(url):
    """host:port part(s) of a transport URL, without user or password."""
    from urllib.parse import urlsplit
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return '?'
    return ','.join(part.rsplit('@', 1)[-1] for part in netloc.split(','))


def redact(text, url):
    """text with the URL's password(s) replaced by ***."""
    from urllib.parse import unquote, urlsplit
    try:
        netloc = urlsplit(url).netloc
    except ValueError:
        return text
    for part in netloc.split(','):
        userinfo = part.rsplit('@', 1)[0] if '@' in part else ''
        if ':' in userinfo:
            password = userinfo.split(':', 1)[1]
            for form in {password, unquote(password)}:
                if form:
                    text = text.replace(form, '***')
    return text


def _consumer_queue_names(conn):
    """Queue names a driver connection consumes (private oslo internals: used
    only to clean up; an empty list if they ever change)."""
    try:
        return [c.queue_name for c in conn._consumers
                if getattr(c, 'queue_name', None)]
    except Exception:
        return []


# --------------------------------------------------------------------------
# serve: the RPC server + notification listener process
# --------------------------------------------------------------------------

def cmd_serve(argv):
    args = build_serve_parser().parse_args(argv)
    url = os.environ.get(URL_ENV)
    if not url:
        log(f'serve: {URL_ENV} is not set')
        return 2
    setup_logging(args.log_level)

    stop = threading.Event()
    ready = threading.Event()

    def on_signal(signum, frame):
        if not ready.is_set():
            # still inside start() (e.g. oslo retrying an unreachable broker
            # forever): nothing to shut down cleanly
            os._exit(128 + signum)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    import oslo_messaging

    lock = threading.Lock()
    state = {'casts': 0, 'cast_last': None,
             'notifications': 0, 'notify_last': None}

    class BenchEndpoint:
        target = oslo_messaging.Target(version='1.0')

        def echo(self, ctxt, value):
            return value

        def count(self, ctxt, value):
            now = time.time()
            with lock:
                state['casts'] += 1
                if state['cast_last'] is None or now > state['cast_last']:
                    state['cast_last'] = now

        def stats(self, ctxt):
            with lock:
                return dict(state)

    class NotifyEndpoint:
        def info(self, ctxt, publisher_id, event_type, payload, metadata):
            now = time.time()
            with lock:
                state['notifications'] += 1
                if state['notify_last'] is None or now > state['notify_last']:
                    state['notify_last'] = now
            return None  # == NotificationResult.HANDLED

    conf = make_conf()
    transport = oslo_messaging.get_rpc_transport(conf, url=url)
    ntransport = oslo_messaging.get_notification_transport(conf, url=url)
    server = oslo_messaging.get_rpc_server(
        transport, oslo_messaging.Target(topic=args.topic, server=SERVER_NAME),
        [BenchEndpoint()], executor='threading')
    listener = oslo_messaging.get_notification_listener(
        ntransport, [oslo_messaging.Target(topic=args.notify_topic)],
        [NotifyEndpoint()], executor='threading', allow_requeue=False)
    server.start()
    listener.start()

    queues = []
    for srv in (server, listener):
        poll_listener = getattr(srv.listener, '_poll_style_listener', None)
        queues += _consumer_queue_names(getattr(poll_listener, 'conn', None))
    for name in (args.topic, f'{args.topic}.{SERVER_NAME}', f'{args.notify_topic}.info'):
        if name not in queues:
            queues.append(name)

    ready.set()
    _OUT.write(json.dumps({'ready': True, 'pid': os.getpid(), 'queues': queues}) + '\n')
    _OUT.flush()

    parent = os.getppid()
    while not stop.wait(0.2):
        if os.getppid() != parent:  # the bench died: do not linger
            log('serve: parent process gone, stopping')
            break
    server.stop()
    listener.stop()
    server.wait()
    listener.wait()
    transport.cleanup()
    ntransport.cleanup()
    return 0


class ServerProcess:
    def __init__(self, url, topic, notify_topic, log_level):
        env = dict(os.environ)
        env[URL_ENV] = url
        env['PYTHONUNBUFFERED'] = '1'
        cmd = [sys.executable, os.path.abspath(__file__), 'serve',
               '--topic', topic, '--notify-topic', notify_topic,
               '--log-level', log_level]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.PIPE, stderr=None, env=env)
        self.queues = []
        self.ready = False

    def wait_ready(self, timeout):
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        buf = b''
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise BenchError(f'server process not ready within {timeout:.0f} s')
                if not sel.select(min(left, 0.5)):
                    if self.proc.poll() is not None:
                        raise BenchError('server process exited before it was ready '
                                         f'(exit code {self.proc.returncode})')
                    continue
                chunk = os.read(self.proc.stdout.fileno(), 65536)
                if not chunk:
                    code = self.proc.wait(timeout=5)
                    raise BenchError('server process exited before it was ready '
                                     f'(exit code {code})')
                buf += chunk
                while b'\n' in buf:
                    line, buf = buf.split(b'\n', 1)
                    try:
                        msg = json.loads(line)
                    except ValueError:
                        log(f'server stdout: {line.decode(errors="replace")}')
                        continue
                    if isinstance(msg, dict) and msg.get('ready'):
                        self.queues = list(msg.get('queues') or [])
                        self.ready = True
                        return
        finally:
            sel.close()

    def check_alive(self):
        if self.proc.poll() is not None:
            raise BenchError(f'server process died (exit code {self.proc.returncode})')

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                log(f'server process did not exit {STOP_TIMEOUT:.0f} s after SIGTERM; killing it')
                self.proc.kill()
                self.proc.wait(timeout=10)
        try:
            self.proc.stdout.close()
        except Exception:
            pass
        return self.proc.returncode


def delete_queues(url, names):
    """queue_delete each name through kombu; missing ones are fine."""
    import kombu
    names = [n for n in dict.fromkeys(names) if n]
    if not names:
        return 0
    deleted = 0
    kurl = url.replace('rabbit://', 'amqp://', 1)
    try:
        with kombu.Connection(kurl, connect_timeout=5) as connection:
            connection.ensure_connection(max_retries=2)
            for name in names:
                channel = connection.channel()
                try:
                    channel.queue_delete(name)
                    deleted += 1
                except Exception:  # a missing queue closes the channel
                    pass
                finally:
                    try:
                        channel.close()
                    except Exception:
                        pass
    except Exception as exc:  # never print str(exc): it could contain the URL
        log(f'queue clean-up failed: {type(exc).__name__}')
    return deleted


# --------------------------------------------------------------------------
# measurements
# --------------------------------------------------------------------------

def percentile(sorted_values, p):
    """Nearest-rank percentile of an ascending list."""
    n = len(sorted_values)
    rank = max(1, math.ceil(p / 100.0 * n))
    return sorted_values[min(rank, n) - 1]


def _r(value, digits=1):
    return None if value is None else round(value, digits)


class Bench:
    def __init__(self, args, server, topic, notify_topic):
        import oslo_messaging
        self.om = oslo_messaging
        self.args = args
        self.server = server
        self.notify_topic = notify_topic
        self.payload = 'x' * args.payload
        self.conf = make_conf()
        self.transport = oslo_messaging.get_rpc_transport(self.conf, url=args.url)
        self.ntransport = None
        client = oslo_messaging.get_rpc_client(
            self.transport, oslo_messaging.Target(topic=topic))
        self.cctxt = client.prepare(timeout=args.rpc_timeout)
        # stats go to the server's own queue, so they never wait behind a
        # backlog of casts in the topic queue
        self.stats_cctxt = client.prepare(server=SERVER_NAME,
                                          timeout=min(args.rpc_timeout, 10.0))
        self.reply_queue = None

    def _call(self, cctxt, method, **kw):
        try:
            return cctxt.call({}, method, **kw)
        except Exception as exc:
            self.server.check_alive()
            raise BenchError(f'{method} call failed: {type(exc).__name__}: {exc}')

    def _remember_reply_queue(self):
        if self.reply_queue is None:
            self.reply_queue = getattr(self.transport._driver, '_reply_q', None)

    def stats(self):
        self.server.check_alive()
        result = self._call(self.stats_cctxt, 'stats')
        self._remember_reply_queue()
        return result

    def run_call(self):
        args = self.args
        cctxt, payload = self.cctxt, self.payload
        perf = time.perf_counter
        first_call_ms = None
        if args.warmup > 0:
            log(f'call: first call + {args.warmup - 1} more warm-up calls')
            t0 = perf()
            result = self._call(cctxt, 'echo', value=payload)
            first_call_ms = (perf() - t0) * 1e3
            self._remember_reply_queue()
            if result != payload:
                raise BenchError('echo returned something else than the payload')
            for _ in range(args.warmup - 1):
                self._call(cctxt, 'echo', value=payload)
        log(f'call: {args.calls} timed sequential calls, payload {args.payload} B')
        rtts = []
        append = rtts.append
        call = self._call
        start = perf()
        next_report = start + 5.0
        for i in range(args.calls):
            t0 = perf()
            result = call(cctxt, 'echo', value=payload)
            t1 = perf()
            append(t1 - t0)
            if result != payload:
                raise BenchError('echo returned something else than the payload')
            if t1 >= next_report:
                log(f'call: {i + 1}/{args.calls}')
                next_report = t1 + 5.0
        total = perf() - start
        self._remember_reply_queue()
        if first_call_ms is None:
            first_call_ms = rtts[0] * 1e3
        us = sorted(r * 1e6 for r in rtts)
        out = {
            'count': args.calls,
            'warmup': args.warmup,
            'calls_per_s': _r(args.calls / total),
            'total_s': _r(total, 3),
            'rtt_us': {
                'p50': _r(percentile(us, 50)),
                'p90': _r(percentile(us, 90)),
                'p99': _r(percentile(us, 99)),
                'max': _r(us[-1]),
                'mean': _r(sum(us) / len(us)),
            },
            'first_call_ms': _r(first_call_ms, 2),
        }
        log(f'call: {out["calls_per_s"]} calls/s, p50 {out["rtt_us"]["p50"]} us, '
            f'p99 {out["rtt_us"]["p99"]} us, max {out["rtt_us"]["max"]} us, '
            f'first call {out["first_call_ms"]} ms')
        return out

    def _wait_received(self, what, count_key, last_key, base, n, wall_start, send_s):
        """Polls stats until the server counted n more; returns the section."""
        deadline = time.monotonic() + self.args.timeout
        got = 0
        while True:
            try:
                st = self.stats()
            except BenchError as exc:  # a slow stats reply: retry until the deadline
                self.server.check_alive()
                log(f'{what}: {exc}')
                st = None
            if st is not None:
                got = st[count_key] - base
                if got >= n:
                    break
            if time.monotonic() >= deadline:
                log(f'{what}: TIMEOUT: {got} of {n} received '
                    f'{self.args.timeout:g} s after the last send')
                return {'count': n, 'received': got,
                        'sent_per_s': _r(n / send_s) if send_s > 0 else None,
                        'received_per_s': None, 'send_s': _r(send_s, 3),
                        'e2e_s': None,
                        'error': f'only {got} of {n} received within {self.args.timeout:g} s'}
            time.sleep(0.1)
        e2e = st[last_key] - wall_start
        out = {'count': n, 'received': got,
               'sent_per_s': _r(n / send_s) if send_s > 0 else None,
               'received_per_s': _r(n / e2e) if e2e > 0 else None,
               'send_s': _r(send_s, 3), 'e2e_s': _r(e2e, 3)}
        log(f'{what}: sent {out["sent_per_s"]}/s, received end-to-end '
            f'{out["received_per_s"]}/s ({n} in {out["e2e_s"]} s)')
        return out

    def run_cast(self):
        n, payload, cctxt = self.args.casts, self.payload, self.cctxt
        base = self.stats()['casts']  # also warms the connection pool
        log(f'cast: {n} casts, payload {self.args.payload} B')
        perf = time.perf_counter
        wall_start = time.time()
        start = perf()
        next_report = start + 5.0
        for i in range(n):
            try:
                cctxt.cast({}, 'count', value=payload)
            except Exception as exc:
                self.server.check_alive()
                raise BenchError(f'cast failed: {type(exc).__name__}: {exc}')
            if i % 1000 == 999 and perf() >= next_report:
                log(f'cast: {i + 1}/{n} sent')
                next_report = perf() + 5.0
        send_s = perf() - start
        return self._wait_received('cast', 'casts', 'cast_last', base, n,
                                   wall_start, send_s)

    def run_notify(self):
        om = self.om
        n = self.args.notifications
        self.ntransport = om.get_notification_transport(self.conf, url=self.args.url)
        notifier = om.Notifier(self.ntransport, publisher_id='oslo_bench',
                               driver='messaging', topics=[self.notify_topic])
        body = {'value': self.payload}
        base = self.stats()['notifications']
        log(f'notify: {n} info notifications, payload {self.args.payload} B')
        perf = time.perf_counter
        wall_start = time.time()
        start = perf()
        next_report = start + 5.0
        for i in range(n):
            notifier.info({}, 'bench.event', body)  # oslo's Notifier never raises
            if i % 1000 == 999 and perf() >= next_report:
                self.server.check_alive()
                log(f'notify: {i + 1}/{n} sent')
                next_report = perf() + 5.0
        send_s = perf() - start
        return self._wait_received('notify', 'notifications', 'notify_last', base, n,
                                   wall_start, send_s)

    def close(self):
        self._remember_reply_queue()
        for t in (self.ntransport, self.transport):
            if t is not None:
                try:
                    t.cleanup()
                except Exception as exc:
                    log(f'transport cleanup failed: {type(exc).__name__}')


def cmd_bench(argv):
    args = build_parser().parse_args(argv)  # exits 2 on bad arguments
    setup_logging(args.log_level)
    import oslo_messaging  # noqa: F401  (fail early if the venv is wrong)
    from importlib.metadata import version

    run_id = uuid.uuid4().hex
    topic = f'oslo_bench_{run_id}'
    notify_topic = f'oslo_bench_n_{run_id}'
    result = {
        'oslo_messaging_version': version('oslo.messaging'),
        'python': '.'.join(str(v) for v in sys.version_info[:3]),
        'url_host': url_host(args.url),
        'payload_bytes': args.payload,
        'topic': topic,
    }
    log(f'oslo.messaging {result["oslo_messaging_version"]}, python {result["python"]}, '
        f'broker {result["url_host"]}, topic {topic}')

    exit_code = 0
    server = bench = None
    try:
        t0 = time.monotonic()
        server = ServerProcess(args.url, topic, notify_topic, args.log_level)
        server.wait_ready(READY_TIMEOUT)
        log(f'server process {server.proc.pid} ready in {time.monotonic() - t0:.2f} s')
        bench = Bench(args, server, topic, notify_topic)
        for phase in PHASES:
            if phase not in args.only:
                continue
            section = getattr(bench, f'run_{phase}')()
            result[phase] = section
            if 'error' in section:
                result['error'] = f'{phase}: {section["error"]}'
                exit_code = 1
                break
    except BenchError as exc:
        msg = redact(str(exc), args.url)
        log(f'ERROR: {msg}')
        result['error'] = msg
        exit_code = 1
    except KeyboardInterrupt:
        log('interrupted')
        result['error'] = 'interrupted'
        exit_code = 1
    except Exception as exc:  # unexpected: still clean up and print the JSON
        import traceback
        log(redact(traceback.format_exc(), args.url))
        result['error'] = redact(f'{type(exc).__name__}: {exc}', args.url)
        exit_code = 1
    finally:
        queues = []
        if bench is not None:
            bench.close()
            if bench.reply_queue:
                queues.append(bench.reply_queue)
        if server is not None:
            log('stopping the server process')
            code = server.stop()
            if code != 0:
                log(f'server process exit code {code}')
            if server.ready:  # else it declared nothing and neither did we
                queues = server.queues + [
                    topic, f'{topic}.{SERVER_NAME}', f'{notify_topic}.info'] + queues
                n = delete_queues(args.url, queues)
                log(f'queue_delete done for {n} queue name(s)')

    _OUT.write(json.dumps(result) + '\n')
    _OUT.flush()
    return exit_code


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == 'serve':
        return cmd_serve(argv[1:])
    return cmd_bench(argv)


if __name__ == '__main__':
    sys.exit(main())
