// What the page remembers. sessionStorage (per tab, survives a reload): a snapshot of each
// reply being streamed, with the last event seq it reflects, so a reload continues the same
// reply from ?after=seq. localStorage: preferences.

const RUN = "parley.run.";

export const snapshots = {
  save(state) {
    try {
      sessionStorage.setItem(RUN + state.runId, JSON.stringify(state));
    } catch {
      // storage full or disabled: a reload then replays the run from its start
    }
  },
  load(runId) {
    try {
      return JSON.parse(sessionStorage.getItem(RUN + runId) ?? "null");
    } catch {
      return null;
    }
  },
  remove(runId) {
    sessionStorage.removeItem(RUN + runId);
  },
  forThread(threadId) {
    const found = [];
    for (let i = 0; i < sessionStorage.length; i += 1) {
      const key = sessionStorage.key(i);
      if (!key?.startsWith(RUN)) continue;
      const state = snapshots.load(key.slice(RUN.length));
      if (state?.threadId === threadId) found.push(state);
    }
    return found.sort((a, b) => (a.startedAt ?? 0) - (b.startedAt ?? 0));
  },
};

export const prefs = {
  get(name, fallback = null) {
    return localStorage.getItem(`parley.${name}`) ?? fallback;
  },
  set(name, value) {
    if (value === null || value === undefined) localStorage.removeItem(`parley.${name}`);
    else localStorage.setItem(`parley.${name}`, value);
  },
};
