"""How many threads zoo's parallel kernels use while training: chosen by measuring the steps.

On an idle 2-core machine a second thread makes an MLP step 1.5-1.7x faster. When another
process keeps the other core busy, most steps still run fast, but now and then the second
thread is descheduled and the step waits for it for a whole time slice (30-80 ms against 1 ms):
on average two threads are then 2-4x slower than one. Which holds is not known in advance and
changes while a run goes on. Both choices give the same bits (``zoo.kernels.threads``), so this
is a matter of speed alone, and the governor treats it as a two-armed bandit over the *mean*
step time (a median would hide the stalls): it keeps the faster arm, tries the other for a few
steps now and then, tries it ever more rarely while it keeps losing, and tries it at once
when the current arm has become slower than the other was when last measured.

It starts on every core, the faster arm on an idle machine: starting on one thread cost the
first ~20 steps of every run a third of their speed on the lstm workload, 5-10% of a 2 s
benchmark (lstm 99-102 steps/s against 112-117 with two threads fixed). On a busy machine the
first stall (a step ``STALL`` times the fastest of the window, before one thread has been
measured) starts the trial of one thread at once, so a busy start costs one stall, not a
window of them.

``zoo.kernels.threads.make_governor`` makes one when ``ZOO_BLAS_THREADS`` is unset or
``auto``, to choose between one thread and every available core; ``ZOO_BLAS_THREADS=N`` fixes
the count instead.
"""

from __future__ import annotations

from collections import deque

from zoo.kernels import threads

# Steps the governor lets pass before it measures (buffers are made, caches warm up).
WARMUP = 3
# Steps measured to know an arm: the current arm's recent window, and a trial of the other
# (plus one first step not counted: the other arm's threads wake up).
WINDOW = 16
# Steps not counted at the start of a several-thread arm's first trial: its worker threads
# start, and their first jobs find cold caches. On the mlp workload the first two-thread steps
# took 31 ms and 4.5 ms against 1.3 ms after; counted, they lost the trial, and 130 steps ran
# on one thread. One thread starts nothing: its trials skip only their first step.
FIRST_TRIAL_WARMUP = WARMUP
# A trial that is no faster than the current arm after this many counted steps ends there.
MIN_TRIAL = 4
# A trial whose first CLEAR_STEPS counted steps each took CLEAR_LOSS times the current arm's
# mean or more ends there: on an idle machine one thread is 1.5-1.8x slower than two, and
# every trial step costs that much. Waiting for MIN_TRIAL cost the lstm benchmark 12 of its
# ~280 steps on one thread (3% of its time); a busy machine's trials of two threads end at
# their first stall anyway.
CLEAR_STEPS, CLEAR_LOSS = 2, 1.25
# Steps between trials: from FIRST_INTERVAL, four times as many after each trial the other
# arm loses, up to MAX_INTERVAL: a trial of two threads that loses on a busy machine costs a
# stalled step (tens of milliseconds), so they must thin out fast.
FIRST_INTERVAL, MAX_INTERVAL = 32, 2048
BACKOFF = 4
# After a clear loss (CLEAR_LOSS) the interval grows this much instead: on an idle machine
# the lstm benchmark's one-thread steps took 11.8 ms against 5.9, and its trials at steps 14
# and 146 of a 2 s run cost it 2%. A machine that gets busy later is not left waiting: a
# current arm slower than the other was when last measured starts a trial at once.
CLEAR_BACKOFF = 16
# An arm must be this much faster to replace the current one (step times are noisy).
MARGIN = 0.05
# Steps shorter than this (seconds) have no GEMM worth a second thread: the governor retires
# to one thread.
MIN_STEP = 100e-6
# A step this many times the window's fastest is a stall (a descheduled thread: 30-80 ms
# against 1-10 ms), not noise.
STALL = 5.0


class ThreadGovernor:
    """Sets ``zoo.kernels.threads`` threads before each training step from the steps' times.

    Call ``observe(seconds)`` after every step. It returns False once the governor has
    retired (the steps are too short to gain anything), after which the caller stops timing.
    """

    def __init__(self, most: int):
        self.arms = (1, most)
        self.current = most
        self.window: deque[float] = deque(maxlen=WINDOW)  # the current arm's recent step times
        # mean step time of each arm when last measured
        self.estimate: dict[int, float | None] = {1: None, most: None}
        self.trial: list[float] | None = None  # the other arm's step times while on trial
        self.trial_skip = 1  # steps of the trial not counted
        self.skip = WARMUP  # steps not to count
        self.until_trial = 0  # the first trial as soon as the current arm is known
        self.interval = FIRST_INTERVAL
        self.switches = 0
        threads.set_threads(self.current)

    @property
    def other(self) -> int:
        return self.arms[1] if self.current == self.arms[0] else self.arms[0]

    def _mean(self) -> float:
        return sum(self.window) / len(self.window)

    def observe(self, seconds: float) -> bool:
        if self.trial is not None:
            self._observe_trial(seconds)
            return True
        if self.skip:
            self.skip -= 1
            return True
        self.window.append(seconds)
        self.until_trial -= 1
        other = self.estimate[self.other]
        # the other arm never measured yet: a stall sends the trial of it now
        stalled = other is None and seconds > STALL * min(self.window)
        if len(self.window) < WINDOW and not stalled:
            return True
        mean = self._mean()
        if other is None and mean < MIN_STEP:
            threads.set_threads(1)
            return False  # nothing here is worth a second thread
        if stalled or self.until_trial <= 0 \
                or (other is not None and mean > (1 + MARGIN) * other):
            self.trial = []
            first = other is None and self.other > 1
            self.trial_skip = FIRST_TRIAL_WARMUP if first else 1
            threads.set_threads(self.other)
        return True

    def _observe_trial(self, seconds: float) -> None:
        trial = self.trial
        assert trial is not None  # called only while a trial runs
        trial.append(seconds)
        counted = trial[self.trial_skip:]
        # The current arm would take about this long for the whole trial: once the trial has
        # spent more than that, the other arm cannot win (one stall of 50 ms decides it).
        # And once a few steps show it no faster, a full window would only confirm it.
        mean = self._mean()
        clear = len(counted) == CLEAR_STEPS and min(counted) >= CLEAR_LOSS * mean
        losing = clear or (len(counted) >= MIN_TRIAL and sum(counted) >= len(counted) * mean)
        if len(counted) < WINDOW and sum(counted) <= WINDOW * mean and not losing:
            return
        trial_mean = sum(counted) / max(len(counted), 1)
        self.estimate[self.other] = trial_mean
        if len(counted) == WINDOW and trial_mean < (1 - MARGIN) * mean:
            self.estimate[self.current] = mean
            self.current = self.other
            self.window = deque(counted, maxlen=WINDOW)
            self.interval = FIRST_INTERVAL
            self.switches += 1
        else:
            self.interval = min((CLEAR_BACKOFF if clear else BACKOFF) * self.interval,
                                MAX_INTERVAL)
            self.skip = 1  # the first step back is a transition too
        self.trial = None
        self.until_trial = self.interval
        threads.set_threads(self.current)

