"""``mlcloud chaos``: SIGKILL the parts of a running system under load, swap its model, measure.

:class:`UpProcess` runs the default app as ``mlcloud up`` does (a child process in its own
process group, every port free, the state in a temporary directory, nats-server and the registry
supervised). :class:`ChaosRun` puts it under closed-loop load (``concurrency`` workers sending
``PUT /mobilenetv27/matches`` with images/cat.jpg), and :meth:`ChaosRun.kill` SIGKILLs one
process of a target and measures, from the requests' own log:

* the requests in flight at the kill, and the failed ones (by status; 0 is a broken connection)
  that ended between the kill and the end of its window (serving again, then ``SETTLE`` seconds);
* the longest time without a success, from the kill on;
* the time until serving again: the first success of a request sent after the kill;
* when the killed process was replaced, and for mlinference how long the new one took to load
  its model (its start to its ``model_loaded`` event).

:func:`soak` kills a target every ``kill_every`` seconds (shuffled rounds over :data:`TARGETS`,
so each is hit), swaps the model every ``swap_every`` seconds (load-then-swap, by relinking the
routes that serve its bindle between an explicit ``onnxruntime`` engine and the metadata's
choice: two model keys, so one of them loads while the other serves), and samples every process's RSS and open file
descriptors; :meth:`Report.misses` names each of issue 15's targets it missed. The modules:
:mod:`~mlcloud.chaos.system` (the system and its processes), :mod:`~mlcloud.chaos.measures` (what
is measured, and the targets), :mod:`~mlcloud.chaos.run` (load, kills, swaps, the soak),
:mod:`~mlcloud.chaos.cli` (the command and its tables).

A worker whose request failed waits ``FAILURE_PAUSE`` before its next one, as a client honouring
``Retry-After`` would (briefer, to count more): the fail-fast 503s while NATS is away would
otherwise spin a worker thousands of times a second on a 2-core machine.
"""

from mlcloud.chaos.measures import Growth, Kill, Report, Swap
from mlcloud.chaos.run import ChaosRun, SoakOptions, chaos_system, soak
from mlcloud.chaos.system import ACTORS, PROVIDERS, SERVERS, TARGETS, UpProcess

__all__ = ["ACTORS", "PROVIDERS", "SERVERS", "TARGETS", "ChaosRun", "Growth", "Kill", "Report", "SoakOptions",
           "Swap", "UpProcess", "chaos_system", "soak"]
