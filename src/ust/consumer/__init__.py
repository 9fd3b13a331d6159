"""The consumer: the one write side of ust, hosted by the embedded session
(``ust.session``) and by ust-consumerd (``ust.daemon.consumerd``).

    source (ring Buffer per CPU) ──drain engine──► StreamOutput (local file, ...)
    event table ──► metadata ──► TraceOutput

* ``trace``   the model: ``Trace`` (uuid, clock, env -> TraceInfo, metadata
              text), ``Channel`` (per-CPU sources, outputs, counters),
              ``ChannelSpec``, ``trace_info``
* ``drain``   the engine: ``Drainer`` (thread, timers, sleep and wake-up,
              pause), ``drain_stream``, ``final_drain``, ``snapshot_stream``
* ``output``  where packets and metadata go: ``StreamOutput``,
              ``TraceOutput``, and local files (``StreamFile``,
              ``LocalTraceOutput``)
* ``source``  where packets come from: ``PacketSource`` (a ring Buffer),
              the per-CPU buffer factory, ``BoundedCounters``
* ``events``  event tables: ``EventTable`` (ids given), ``EventIdFile``
              (ids allocated, shared with forked children)
* ``shm_path`` ``--shm-path``: ``ShmDirectory``, a trace's buffers as files
* ``crash``   ``ust crash``: ``recover``, a crashed session's buffer files back to traces

docs/consumer.md describes the interfaces and how the next outputs plug in.
"""
