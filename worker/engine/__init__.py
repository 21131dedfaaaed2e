"""The batch engine: how the files of a batch become rows, in embedded and distributed mode alike.

No Celery import: the Celery task (:mod:`worker.celery_app.tasks`) and embedded ``submit``
(:mod:`producer.embedded`) both call :func:`worker.engine.chunk.run_chunk`. From the top down:

- :mod:`.chunk` -- the one route of a chunk: claim, process files, store rows, classify ready
  speakers, finalise; failing what cannot run;
- :mod:`.rows` -- a batch's rows: store analysed rows, read the batch's options, classify groups
  (speakers, the whole batch) once all of their files have features;
- :mod:`.leases` -- which process works on a row and for how long (claim, heartbeat, dead owners);
- :mod:`.notify` -- the webhook sent when a batch is final;
- :mod:`.warmup` -- preparing a process that runs chunks (warm-up before a fork, set-up after);
- :mod:`.analyse` -- one file to its row(s): decode, featurise, classify (no database);
- :mod:`.finalise` -- a batch's final status, counts and warnings, with its last row;
- :mod:`.assess` -- the batch warnings (out-of-domain share, one label dominating).
"""
