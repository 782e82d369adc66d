"""Batch scoring: a folder of images, a CSV or a JSONL file through the lattice, resumably.

``mlcloud predict --model NAME INPUT --out results.jsonl`` (:mod:`mlcloud.batch.cli`) and
``mlcloud.predict(NAME, data, out)`` (:mod:`mlcloud.batch.run`) read the input
(:mod:`mlcloud.batch.sources`), send it through the lattice's HTTP API with a bounded number of
requests in flight (:mod:`mlcloud.batch.job`) and write one JSON line per row, which is also how a
stopped job resumes (:mod:`mlcloud.batch.journal`). docs/batch.md tells the whole story.
"""

from mlcloud.batch.job import BatchSummary, JobSettings, run_job
from mlcloud.batch.journal import Journal
from mlcloud.batch.run import predict, predict_async
from mlcloud.batch.sources import InputError, open_source

__all__ = ["BatchSummary", "InputError", "JobSettings", "Journal", "open_source", "predict", "predict_async",
           "run_job"]
