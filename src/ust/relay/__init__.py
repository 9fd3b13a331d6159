"""Streaming to ust-relayd and live viewing (docs/relay.md).

* ``wire``       our ingest protocol (consumers -> relay): framing, messages, validation
* ``viewer_abi`` LTTng's live viewer protocol, as babeltrace2 and Trace Compass speak it
* ``relayd``     the relay daemon: ingest ports, the trace files it writes, the live port
* ``sender``     the consumer side of the ingest protocol (a stream output, a trace replayer)
"""
