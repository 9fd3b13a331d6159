"""The stream really crosses hosts: ust-relayd in its own network namespace,
reached over a veth pair, fed by senders that each have their own UTS name."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import needs_babeltrace2
from daemon_util import SRC, wait_until
from relay_util import Relayd, attached_viewers, files_of, live_viewer, make_trace

pytestmark = pytest.mark.skipif(os.geteuid() != 0 or not os.path.exists("/usr/sbin/ip")
                                or not os.path.exists("/usr/bin/unshare"), reason="needs root, ip and unshare")

SENDER = r"""
import socket, sys
from ust.relay.sender import RelayClient, replay_trace
address, ctrl, data, trace = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
c = RelayClient(address, ctrl, data)
c.create_session("svc", socket.gethostname(), live_timer_us=100000)
print("created", flush=True)
sys.stdin.readline()  # go
replay_trace(c, trace)
c.close()
"""


def sh(*args):
    subprocess.run(args, check=True, capture_output=True)


@pytest.fixture
def relay_netns(tmp_path):
    tag = os.getpid() % 100000
    ns = f"ustrelay{tag}"
    host_if, ns_if = f"urh{tag}", f"urn{tag}"
    net = f"10.{200 + tag % 50}.{tag % 250}"
    sh("ip", "netns", "add", ns)
    try:
        sh("ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if)
        sh("ip", "link", "set", ns_if, "netns", ns)
        sh("ip", "addr", "add", f"{net}.1/30", "dev", host_if)
        sh("ip", "link", "set", host_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "addr", "add", f"{net}.2/30", "dev", ns_if)
        sh("ip", "netns", "exec", ns, "ip", "link", "set", ns_if, "up")
        sh("ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up")
        rundir = tmp_path / "run"
        rundir.mkdir()
        relay = Relayd(tmp_path / "out", rundir, address=f"{net}.2", prefix=("ip", "netns", "exec", ns))
        yield relay
        assert relay.stop() == 0, relay.stderr
    finally:
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)


@needs_babeltrace2
def test_hosts_stream_across_a_network_to_one_relay(relay_netns, tmp_path):
    traces = {}
    senders = {}
    env = dict(os.environ, PYTHONPATH=SRC, UST_AGENT="0")
    for host in ("rack1-a", "rack1-b"):
        traces[host] = tmp_path / f"trace-{host}"
        make_trace(traces[host])
        # its own UTS namespace: the host name the relay files it under is the sender's own
        senders[host] = subprocess.Popen(
            ["unshare", "--uts", "sh", "-c", f'hostname {host} && exec "$0" "$@"', sys.executable, "-c", SENDER,
             relay_netns.address, str(relay_netns.control), str(relay_netns.data), str(traces[host])],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert senders[host].stdout.readline() == "created\n"
    viewers = {}
    for host in senders:
        viewers[host] = live_viewer(f"{relay_netns.live_url}/host/{host}/svc", tmp_path / f"live-{host}.txt")
    wait_until(lambda: attached_viewers(relay_netns) == 2, timeout=120, what="both viewers attached")
    for host, p in senders.items():
        p.stdin.write("go\n")
        p.stdin.flush()
    for host, p in senders.items():
        assert p.wait(timeout=300) == 0
    for host, v in viewers.items():
        err = v.communicate(timeout=300)[1]
        assert v.returncode == 0, err
        local = subprocess.run(["babeltrace2", str(traces[host])], capture_output=True, text=True,
                               check=True).stdout
        assert (tmp_path / f"live-{host}.txt").read_text() == local
    wait_until(lambda: attached_viewers(relay_netns) == 0, what="the sessions ended")
    relay_netns.stop()
    for host in senders:
        [session] = os.listdir(os.path.join(relay_netns.output, host))
        assert session.startswith("svc-")
        copy = files_of(os.path.join(relay_netns.output, host, session))
        local = {k: v for k, v in files_of(traces[host]).items() if v}
        assert copy == local
    # one analysis over every host's directory: babeltrace2 merges them
    merged = subprocess.run(["babeltrace2", relay_netns.output], capture_output=True, text=True, check=True).stdout
    assert merged.count("relay:ev") == 2 * 9000
