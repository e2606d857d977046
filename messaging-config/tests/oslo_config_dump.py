"""Loads config files with the real oslo.config (and oslo.messaging's options) and
prints, as one JSON object, what oslo.messaging would use: the typed [DEFAULT] and
[oslo_messaging_notifications] options, and for the RPC and notification transports
the URL (hosts, credentials, virtual host) and the driver options as oslo's RabbitMQ
driver reads them (its section, with the URL's query winning: ConfigOptsProxy).

    python oslo_config_dump.py [--config-file F | --config-dir D]... [--value GROUP.KEY]...

Used by messaging-config/tests/oslo_agreement.rs to check that messaging-config reads
the same files the same way.
"""

import json
import sys
import warnings

warnings.simplefilter("ignore")

from oslo_config import cfg  # noqa: E402
import oslo_messaging  # noqa: E402,F401
from oslo_messaging import opts as messaging_opts  # noqa: E402
from oslo_messaging import transport as messaging_transport  # noqa: E402
from oslo_messaging._drivers import common as driver_common  # noqa: E402
from oslo_messaging.notify import _impl_routing  # noqa: E402

RABBIT = "oslo_messaging_rabbit"
NOTIFICATIONS = "oslo_messaging_notifications"


def main(argv):
    args, extra = [], []
    i = 0
    while i < len(argv):
        if argv[i] in ("--config-file", "--config-dir"):
            args += argv[i:i + 2]
        elif argv[i] == "--value":
            extra.append(argv[i + 1])
        else:
            raise SystemExit(f"unknown argument {argv[i]}")
        i += 2

    conf = cfg.ConfigOpts()
    for group, options in messaging_opts.list_opts():
        conf.register_opts(options, group=group)
    # The routing driver registers its option on import, outside list_opts().
    conf.register_opt(_impl_routing.router_config, group=NOTIFICATIONS)
    # Options of the service itself that the test reads through Config::value.
    for name in extra:
        group, key = name.split(".", 1)
        conf.register_opt(cfg.StrOpt(key), group=None if group == "DEFAULT" else group)
    conf(args=args, project="messaging-config-test", default_config_files=[],
         default_config_dirs=[], use_env=False)

    def set_in_files(name, group):
        location = conf.get_location(name, group)
        return location is not None and location.location == cfg.Locations.user

    def transport(url_text):
        url = messaging_transport.TransportURL.parse(conf, url_text)
        proxy = driver_common.ConfigOptsProxy(conf, url, RABBIT)[RABBIT]
        options = {}
        for opt in conf[RABBIT]:
            if set_in_files(opt, RABBIT) or opt in url.query:
                options[opt] = proxy[opt]
        return {
            "transport": url.transport,
            "virtual_host": url.virtual_host,
            "hosts": [[h.hostname, h.port, h.username, h.password] for h in url.hosts],
            "options": options,
        }

    notifications = conf[NOTIFICATIONS]
    out = {
        "DEFAULT": {
            "control_exchange": conf.control_exchange,
            "rpc_response_timeout": conf.rpc_response_timeout,
            "executor_thread_pool_size": conf.executor_thread_pool_size,
            "rpc_ping_enabled": conf.rpc_ping_enabled,
        },
        "notifications": {
            "driver": notifications.driver,
            "topics": notifications.topics,
            "retry": notifications.retry,
            "routing_config": notifications.routing_config,
        },
        "rpc": transport(None),
        "notification": transport(notifications.transport_url),
        "values": {
            name: (conf[name.split(".", 1)[1]] if name.startswith("DEFAULT.")
                   else conf[name.split(".", 1)[0]][name.split(".", 1)[1]])
            for name in extra
        },
    }
    json.dump(out, sys.stdout, sort_keys=True)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main(sys.argv[1:])
