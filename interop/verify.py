#!/usr/bin/env python3
"""Python-to-Python self-test of oslo_peer.py against a live RabbitMQ.

    PY=$(interop/setup-venv.sh | tail -1)
    "$PY" interop/verify.py [--url rabbit://guest:guest@127.0.0.1:5672/]

Starts servers/listeners in the background, drives call/cast/notify through
oslo_peer.py subprocesses, checks every JSON line, SIGTERMs everything and
checks exit codes. All names carry a random suffix so nothing collides with
other users of the broker; the queues/exchanges it created are deleted at the
end (best effort, via rabbitmqctl + the amqp library of the venv).

Prints one line per check, timings, and a final 'N passed, N failed' line.
Exit status 0 iff everything passed.
"""

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

HERE = os.path.dirname(os.path.abspath(__file__))
PEER = os.path.join(HERE, 'oslo_peer.py')

PASSED = 0
FAILED = 0


def check(name, ok, detail=''):
    global PASSED, FAILED
    if ok:
        PASSED += 1
        print(f'PASS {name}', flush=True)
    else:
        FAILED += 1
        print(f'FAIL {name} {detail}', flush=True)
    return ok


class Background:
    """A long-running peer (server/listen) whose stdout lines are collected."""

    def __init__(self, name, argv, logdir):
        self.name = name
        self.stderr_path = os.path.join(logdir, f'{name}.stderr')
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE,
                                     stderr=open(self.stderr_path, 'w'),
                                     text=True)
        self.lines = []
        self.cv = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        for line in self.proc.stdout:
            with self.cv:
                self.lines.append(line.rstrip('\n'))
                self.cv.notify_all()
        with self.cv:
            self.cv.notify_all()

    def wait_for(self, pred, timeout=15.0):
        deadline = time.monotonic() + timeout
        with self.cv:
            while not pred(self):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.cv.wait(min(left, 0.2))
            return True

    def ready(self, timeout=30.0):
        return self.wait_for(lambda s: 'READY' in s.lines, timeout)

    def events(self):
        with self.cv:
            return [json.loads(l) for l in self.lines if l != 'READY']

    def stdout_clean(self):
        with self.cv:
            lines = list(self.lines)
        if not lines or lines[0] != 'READY':
            return False
        try:
            return all(isinstance(json.loads(l), dict) for l in lines[1:])
        except ValueError:
            return False

    def terminate(self, sig=signal.SIGTERM, timeout=20):
        t0 = time.monotonic()
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
            print(f'# {self.name}: exited {rc} {time.monotonic() - t0:.2f}s after signal',
                  flush=True)
            return rc
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            return 'killed'


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument('--url', default='rabbit://guest:guest@127.0.0.1:5672/')
    ap.add_argument('--python', default=sys.executable,
                    help='interpreter with oslo.messaging (default: this one)')
    ap.add_argument('--keep-logs', action='store_true')
    opts = ap.parse_args()

    py, url = opts.python, opts.url
    sfx = uuid.uuid4().hex[:8]
    topic = f'interop_rpc_{sfx}'
    ntopic = f'interop_notif_{sfx}'
    xtopic = f'interop_xrpc_{sfx}'
    exchange = f'interop_ex_{sfx}'
    pool_a, pool_b = f'interop_poolA_{sfx}', f'interop_poolB_{sfx}'
    logdir = tempfile.mkdtemp(prefix='oslo-peer-verify-')
    print(f'# suffix {sfx}, stderr logs in {logdir}', flush=True)
    bg = []

    def start(name, *args):
        b = Background(name, [py, PEER, *args, '--url', url], logdir)
        bg.append(b)
        return b

    def run(*args, timeout=60):
        t0 = time.monotonic()
        r = subprocess.run([py, PEER, *args], capture_output=True, text=True,
                           timeout=timeout)
        dt = time.monotonic() - t0
        out = r.stdout.splitlines()
        parsed = None
        if len(out) == 1:
            try:
                parsed = json.loads(out[0])
            except ValueError:
                pass
        return r.returncode, parsed, out, dt

    def call(method, kwargs, *extra, topic_=None, timeout=60):
        return run('call', '--url', url, '--topic', topic_ or topic, *extra,
                   method, json.dumps(kwargs), timeout=timeout)

    def ok_call(name, method, kwargs, expect, *extra):
        rc, res, out, dt = call(method, kwargs, *extra)
        check(name, rc == 0 and res == {'result': expect},
              f'rc={rc} stdout={out!r}')
        return res

    try:
        # ---------------------------------------------------------- RPC
        s1 = start('server_s1', 'server', '--topic', topic, '--server', 's1')
        check('server s1 prints READY', s1.ready(), s1.lines)

        ok_call('call add', 'add', {'a': 1, 'b': 2}, 3)
        value = {'s': 'h\u00e9llo \u2713', 'f': 1.5, 'n': None,
                 'l': [True, False, [1, {'x': 'y'}]], 'big': 12345678901234567890}
        ok_call('call echo (nested/unicode/bigint)', 'echo', {'value': value}, value)
        ok_call('call echo string', 'echo', {'value': 'hi'}, 'hi')
        ok_call('call add to --server s1', 'add', {'a': 'x', 'b': 'y'}, 'xy',
                '--server', 's1')
        ok_call('call ns_echo ns1 v2.0', 'ns_echo', {'value': [1, 'x']},
                {'ns': 'ns1', 'value': [1, 'x']}, '--namespace', 'ns1', '--version', '2.0')
        ok_call('call ns_echo ns1 v2.1', 'ns_echo', {'value': 7},
                {'ns': 'ns1', 'value': 7}, '--namespace', 'ns1', '--version', '2.1')
        ok_call('call echo --version 1.0', 'echo', {'value': 1}, 1, '--version', '1.0')

        ctx = {'user': 'u1', 'project_id': 'p1', 'request_id': 'req-abc',
               'roles': ['admin'], 'is_admin': True}
        rc, res, out, _ = call('whoami', {}, '--context', json.dumps(ctx))
        check('call whoami returns the context (+client_timeout=None)',
              rc == 0 and res == {'result': dict(ctx, client_timeout=None)},
              f'stdout={out!r}')
        rc, res, out, _ = call('whoami', {}, '--call-monitor-timeout', '30')
        check('call whoami with call_monitor_timeout=30 -> client_timeout=30',
              rc == 0 and res == {'result': {'client_timeout': 30}}, f'stdout={out!r}')

        rc, res, out, _ = call('fail', {'message': 'boom'})
        err = (res or {}).get('error', {})
        check('call fail -> ValueError (builtins, rebuilt locally)',
              rc == 0 and err.get('type') == 'ValueError'
              and err.get('module') == 'builtins'
              and err.get('message', '').startswith('boom\nTraceback')
              and err.get('exc_type') is None and err.get('value') is None,
              f'stdout={out!r}')
        print('# fail JSON: ' + (out[0] if out else ''), flush=True)

        rc, res, out, _ = call('echo', {'value': 1}, '--version', '1.5')
        err = (res or {}).get('error', {})
        check('call --version 1.5 -> RemoteError(UnsupportedVersion)',
              rc == 0 and err.get('type') == 'RemoteError'
              and err.get('module') == 'oslo_messaging.rpc.client'
              and err.get('exc_type') == 'UnsupportedVersion'
              and err.get('value') == 'Endpoint does not support RPC version 1.5. '
                                      'Attempted method: echo',
              f'stdout={out!r}')
        print('# UnsupportedVersion JSON: ' + (out[0] if out else ''), flush=True)

        rc, res, out, _ = call('ns_echo', {'value': 1}, '--namespace', 'ns1',
                               '--version', '2.2')
        err = (res or {}).get('error', {})
        check('call ns1 --version 2.2 -> RemoteError(UnsupportedVersion)',
              err.get('exc_type') == 'UnsupportedVersion', f'stdout={out!r}')
        rc, res, out, _ = call('ns_echo', {'value': 1})
        err = (res or {}).get('error', {})
        # the default endpoint (namespace None, 1.0) is compatible but lacks the
        # method, so oslo reports NoSuchMethod rather than UnsupportedVersion
        check('call ns_echo without namespace -> RemoteError(NoSuchMethod)',
              err.get('exc_type') == 'NoSuchMethod', f'stdout={out!r}')
        rc, res, out, _ = call('nosuch', {})
        err = (res or {}).get('error', {})
        check('call unknown method -> RemoteError(NoSuchMethod)',
              err.get('type') == 'RemoteError' and err.get('exc_type') == 'NoSuchMethod'
              and err.get('value') == 'Endpoint does not support RPC method nosuch',
              f'stdout={out!r}')
        rc, res, out, _ = call('add', {'a': 1})
        err = (res or {}).get('error', {})
        check('call add with a missing arg -> TypeError (builtins)',
              err.get('type') == 'TypeError' and err.get('module') == 'builtins',
              f'stdout={out!r}')

        rc, res, out, dt = call('sleep', {'seconds': 3}, '--timeout', '1')
        err = (res or {}).get('error', {})
        check('call sleep 3 --timeout 1 -> MessagingTimeout',
              rc == 0 and err.get('type') == 'MessagingTimeout'
              and err.get('module') == 'oslo_messaging.exceptions'
              and 1.0 <= dt < 3.0, f'dt={dt:.2f} stdout={out!r}')
        rc, res, out, dt = call('echo', {'value': 1}, '--server', 'nobody',
                                '--timeout', '1.5')
        err = (res or {}).get('error', {})
        check('call to absent --server -> MessagingTimeout (float timeout ok)',
              err.get('type') == 'MessagingTimeout' and dt < 4, f'stdout={out!r}')
        rc, res, out, dt = call('sleep', {'seconds': 3}, '--timeout', '10',
                                '--call-monitor-timeout', '2')
        check('call sleep 3 with call_monitor_timeout=2 (heartbeats) succeeds',
              res == {'result': 3} and dt >= 3, f'stdout={out!r}')
        rc, res, out, dt = call('sleep', {'seconds': 3}, '--timeout', '10',
                                '--call-monitor-timeout', '1')
        check('call_monitor_timeout=1: server refuses to heartbeat (<1s interval) '
              '-> MessagingTimeout after ~1s',
              (res or {}).get('error', {}).get('type') == 'MessagingTimeout'
              and dt < 3, f'dt={dt:.2f} stdout={out!r}')

        # cast + fanout with two servers on the topic
        s2 = start('server_s2', 'server', '--topic', topic, '--server', 's2')
        check('server s2 prints READY', s2.ready(), s2.lines)
        time.sleep(3.5)  # let the sleeps above finish so the counts below are clean
        n1, n2 = len(s1.events()), len(s2.events())

        rc, res, out, _ = run('cast', '--url', url, '--topic', topic, '--server', 's2',
                              '--context', '{"request_id": "req-cast"}',
                              'echo', '{"value": "c1"}')
        check('cast to s2 prints {"cast": "ok"}', rc == 0 and res == {'cast': 'ok'},
              f'stdout={out!r}')
        got = s2.wait_for(lambda s: any(e['method'] == 'echo' and e['args'] == {'value': 'c1'}
                                        for e in s.events()))
        ev = [e for e in s2.events() if e['args'] == {'value': 'c1'}]
        check('cast arrives at s2 with its context', got and ev and
              ev[0]['ctxt'] == {'request_id': 'req-cast', 'client_timeout': None},
              f'{ev}')

        rc, res, out, _ = run('cast', '--url', url, '--topic', topic, '--fanout',
                              'echo', '{"value": "fan"}')
        check('fanout cast prints {"cast": "ok"}', rc == 0 and res == {'cast': 'ok'},
              f'stdout={out!r}')
        fan = lambda s: any(e['args'] == {'value': 'fan'} for e in s.events())
        check('fanout cast reaches s1 and s2', s1.wait_for(fan) and s2.wait_for(fan))

        for i in range(4):
            run('cast', '--url', url, '--topic', topic, 'echo',
                json.dumps({'value': f'rr{i}'}))
        rr = lambda s: sum(1 for e in s.events()
                           if str(e['args'].get('value', '')).startswith('rr'))
        deadline = time.monotonic() + 10
        while rr(s1) + rr(s2) < 4 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(0.5)
        check('4 topic casts (no server) delivered exactly once each across s1+s2',
              rr(s1) + rr(s2) == 4, f's1={rr(s1)} s2={rr(s2)}')

        # custom exchange
        s3 = start('server_x', 'server', '--topic', xtopic, '--server', 'sx',
                   '--exchange', exchange)
        check('server on custom exchange prints READY', s3.ready(), s3.lines)
        rc, res, out, _ = call('add', {'a': 2, 'b': 3}, '--exchange', exchange,
                               topic_=xtopic)
        check('call via --exchange', res == {'result': 5}, f'stdout={out!r}')
        rc, res, out, _ = call('add', {'a': 2, 'b': 3}, '--timeout', '1', topic_=xtopic)
        check('same topic on the default exchange -> MessagingTimeout',
              (res or {}).get('error', {}).get('type') == 'MessagingTimeout',
              f'stdout={out!r}')

        for s in (s1, s2, s3):
            check(f'{s.name} stdout is READY + JSON lines only', s.stdout_clean(),
                  s.lines[:3])
        ev = [e for e in s1.events() + s2.events() if e['method'] == 'add'][0]
        check('server event line shape {"method","args","ctxt"}',
              set(ev) == {'method', 'args', 'ctxt'}, ev)
        rc = s1.terminate(signal.SIGTERM)
        check('server s1 exits 0 on SIGTERM', rc == 0, rc)
        rc = s2.terminate(signal.SIGINT)
        check('server s2 exits 0 on SIGINT', rc == 0, rc)
        rc = s3.terminate(signal.SIGTERM)
        check('server on exchange exits 0 on SIGTERM', rc == 0, rc)

        # ------------------------------------------------------ notifications
        la1 = start('listen_a1', 'listen', '--topic', ntopic, '--pool', pool_a)
        la2 = start('listen_a2', 'listen', '--topic', ntopic, '--pool', pool_a)
        lb = start('listen_b', 'listen', '--topic', ntopic, '--pool', pool_b)
        ln = start('listen_nopool', 'listen', '--topic', ntopic)
        listeners = (la1, la2, lb, ln)
        check('4 listeners print READY', all(l.ready() for l in listeners))

        def notify(priority, event_type, payload, *extra):
            return run('notify', '--url', url, '--topic', ntopic,
                       '--priority', priority, '--event-type', event_type,
                       '--publisher-id', 'interop.host1', *extra, json.dumps(payload))

        sent = [
            ('info', 'info', 'compute.instance.create', {'id': 1}, ()),
            ('warning', 'warn', 'e.warning', [1, 2], ()),
            ('warn', 'warn', 'e.warn', 'str', ()),
            ('error', 'error', 'e.error', None, ()),
            ('critical', 'critical', 'e.critical', {'n': 1.5}, ()),
            ('audit', 'audit', 'e.audit', {}, ()),
            ('debug', 'debug', 'e.debug', True, ()),
            ('sample', 'sample', 'e.sample', {'m': 3}, ()),
            ('info', 'info', 'e.ctx', {}, ('--context', json.dumps(
                {'user': 'u1', 'project_id': 'p1', 'request_id': 'req-n',
                 'auth_token': 'SECRET'}))),
            ('info', 'info', 'e.rawctx', {}, ('--raw-context', '--context',
                                             json.dumps({'custom': 'x', 'n': 1}))),
        ]
        for prio, _, et, payload, extra in sent:
            rc, res, out, _ = notify(prio, et, payload, *extra)
            if not check(f'notify {prio} {et} prints {{"notified": "ok"}}',
                         rc == 0 and res == {'notified': 'ok'}, f'stdout={out!r}'):
                break
        n = len(sent)
        have = lambda k: (lambda s: len(s.events()) >= k)
        check(f'pool B listener gets all {n}', lb.wait_for(have(n)), len(lb.events()))
        check(f'no-pool listener gets all {n}', ln.wait_for(have(n)), len(ln.events()))
        deadline = time.monotonic() + 10
        while len(la1.events()) + len(la2.events()) < n and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
        a1, a2 = la1.events(), la2.events()
        check(f'pool A: {n} notifications split across its 2 listeners, one copy each',
              len(a1) + len(a2) == n
              and len({e['metadata']['message_id'] for e in a1 + a2}) == n,
              f'a1={len(a1)} a2={len(a2)}')
        evs = {e['event_type']: e for e in lb.events()}
        check('priorities map (warning -> "warn")',
              all(evs.get(et, {}).get('priority') == p2 for _, p2, et, _, _ in sent),
              {k: v['priority'] for k, v in evs.items()})
        check('payloads round-trip',
              all(evs.get(et, {}).get('payload', 'MISSING') == pl
                  for _, _, et, pl, _ in sent))
        e = evs.get('compute.instance.create', {})
        check('notification line shape + publisher_id + metadata keys',
              set(e) == {'priority', 'publisher_id', 'event_type', 'payload',
                         'metadata', 'ctxt'}
              and e['publisher_id'] == 'interop.host1'
              and set(e['metadata']) == {'message_id', 'timestamp'}, e)
        check('no --context -> ctxt is {"client_timeout": null}',
              e.get('ctxt') == {'client_timeout': None}, e.get('ctxt'))
        c = evs.get('e.ctx', {}).get('ctxt', {})
        check('RequestContext context arrives redacted (auth_token null)',
              c.get('user') == 'u1' and c.get('project_id') == 'p1'
              and c.get('request_id') == 'req-n' and c.get('auth_token') is None, c)
        c = evs.get('e.rawctx', {}).get('ctxt', {})
        check('--raw-context dict arrives verbatim',
              c == {'custom': 'x', 'n': 1, 'client_timeout': None}, c)
        print('# notification JSON: ' + json.dumps(evs.get('e.ctx'), sort_keys=True))

        for l in listeners:
            check(f'{l.name} stdout is READY + JSON lines only', l.stdout_clean(),
                  l.lines[:3])
        for l in listeners:
            rc = l.terminate(signal.SIGTERM)
            check(f'{l.name} exits 0 on SIGTERM', rc == 0, rc)

        # ------------------------------------------------------ bad arguments
        for argv in (['call', '--topic', 't', 'echo', '{}'],                # no --url
                     ['call', '--url', url, '--topic', 't', 'echo', '{bad'],
                     ['call', '--url', url, '--topic', 't', 'echo', '[1]'],
                     ['call', '--url', url, '--topic', 't', '--timeout', 'x', 'echo', '{}'],
                     ['notify', '--url', url, '--topic', 't', '--priority', 'loud',
                      '--event-type', 'e', '--publisher-id', 'p', '{}'],
                     ['frobnicate']):
            rc, _, out, _ = run(*argv)
            check(f'bad args {argv!r} -> exit 2, empty stdout',
                  rc == 2 and out == [], f'rc={rc} out={out}')

        # ------------------------------------------------------ timings
        s4 = start('server_t', 'server', '--topic', topic, '--server', 's4')
        s4.ready()
        times = []
        for _ in range(5):
            rc, res, out, dt = call('echo', {'value': 1})
            times.append(dt)
        s4.terminate()
        t0 = time.monotonic()
        subprocess.run([py, '-c', 'import oslo_messaging'], capture_output=True)
        imp = time.monotonic() - t0
        print(f'# timing: one `call` subprocess end to end: min {min(times):.3f}s '
              f'median {statistics.median(times):.3f}s max {max(times):.3f}s; '
              f'`python -c "import oslo_messaging"`: {imp:.3f}s', flush=True)
    finally:
        for b in bg:
            if b.proc.poll() is None:
                b.terminate()
        cleanup(py, sfx, exchange, topic, url)
        if not opts.keep_logs and FAILED == 0:
            shutil.rmtree(logdir, ignore_errors=True)

    print(f'{PASSED} passed, {FAILED} failed', flush=True)
    return 0 if FAILED == 0 else 1


def cleanup(py, sfx, exchange, topic, url):
    """Best-effort removal of the queues/exchanges this run created."""
    if not shutil.which('rabbitmqctl'):
        return
    try:
        r = subprocess.run(['rabbitmqctl', 'list_queues', '-q', '--no-table-headers',
                            'name'], capture_output=True, text=True, timeout=60)
        queues = [q.strip() for q in r.stdout.splitlines() if sfx in q]
    except Exception:
        return
    code = r'''
import sys, json, urllib.parse, amqp
u = urllib.parse.urlparse(sys.argv[1])
c = amqp.Connection(host=f"{u.hostname}:{u.port or 5672}", userid=u.username or "guest",
                    password=u.password or "guest", virtual_host=urllib.parse.unquote(u.path[1:]) or "/")
c.connect(); ch = c.channel()
for q in json.loads(sys.argv[2]):
    ch.queue_delete(q)
for x in json.loads(sys.argv[3]):
    ch.exchange_delete(x)
c.close()
'''
    subprocess.run([py, '-c', code, url, json.dumps(queues),
                    json.dumps([exchange, f'{topic}_fanout'])],
                   capture_output=True, timeout=60)
    print(f'# cleanup: deleted {len(queues)} queues with suffix {sfx}', flush=True)


if __name__ == '__main__':
    sys.exit(main())
