"""Container healthcheck probe for the project's image (standard library only, exits 0 when healthy).

    python infra/docker/healthcheck.py --url http://127.0.0.1:8000/readyz   an HTTP endpoint answers 2xx
    python infra/docker/healthcheck.py --tcp-env FRAUD_KAFKA_BOOTSTRAP_SERVERS   a TCP connect to every host:port
    python infra/docker/healthcheck.py                                        HEALTHCHECK_URL if set, else the broker

Compose runs it inside the service's container (so 127.0.0.1 is that container); the compose-emulation
test runs the same command as a local process.
"""

from __future__ import annotations

import argparse
import os
import socket
import sys
import urllib.error
import urllib.request


def check_url(url: str, timeout: float) -> str | None:
    """None when `url` answers 2xx, else why not."""
    if not url.startswith(("http://", "https://")):
        return f"{url}: not an http(s) URL"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:  # noqa: S310 - scheme checked above
            status = int(resp.status)
    except urllib.error.HTTPError as exc:
        return f"{url}: HTTP {exc.code}"
    except (OSError, ValueError) as exc:
        return f"{url}: {exc}"
    return None if 200 <= status < 300 else f"{url}: HTTP {status}"


def check_tcp(servers: str, timeout: float) -> str | None:
    """None when every `host:port` of a comma-separated list accepts a TCP connection."""
    for server in filter(None, (s.strip() for s in servers.split(","))):
        host, _, port = server.rpartition(":")
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
                pass
        except (OSError, ValueError) as exc:
            return f"{server}: {exc}"
    return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", action="append", default=[], help="HTTP URL that must answer 2xx")
    parser.add_argument("--tcp", action="append", default=[], help="host:port list that must accept connections")
    parser.add_argument("--tcp-env", action="append", default=[], help="environment variable holding a host:port list")
    parser.add_argument("--timeout", type=float, default=4.0)
    args = parser.parse_args(argv)

    urls: list[str] = list(args.url)
    tcp: list[str] = list(args.tcp)
    for name in args.tcp_env:
        value = os.environ.get(name, "")
        if not value:
            print(f"unhealthy: {name} is not set", file=sys.stderr)
            return 1
        tcp.append(value)
    if not urls and not tcp:
        if os.environ.get("HEALTHCHECK_URL"):
            urls.append(os.environ["HEALTHCHECK_URL"])
        else:
            tcp.append(os.environ.get("FRAUD_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:9092"))

    problems = [
        p for p in (*(check_url(u, args.timeout) for u in urls), *(check_tcp(t, args.timeout) for t in tcp)) if p
    ]
    for problem in problems:
        print(f"unhealthy: {problem}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
