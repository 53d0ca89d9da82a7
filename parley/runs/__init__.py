"""Runs: how a message becomes an answer, durably, across any number of processes.

- ``lifecycle``: every state change of a run (create, claim, heartbeat, finish, cancel, reap);
- ``worker``: the loop that claims runs and executes them through the agent;
- ``reaper``: resolves runs whose worker died, and the after-run work they left;
- ``control``: runs as the API sees them (``Runs``);
- ``state``: what a run has produced so far (``RunState``).

Import from the modules: this face imports nothing, so that the agent can use ``state``.
"""
