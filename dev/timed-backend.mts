// A model backend with every op timed (wall clock, until its promise settles), for
// dev/profile-step.mts (WebGPU) and dev/profile-step-cpu.mts.
export type OpTimes = Map<string, { ms: number; calls: number }>;

/** `backend` with the time of each call added to times[op]; `settle`, when given, runs after each async op before its clock stops. */
export function timedBackend<T extends object>(backend: T, times: OpTimes, settle?: () => Promise<unknown>): T {
  return new Proxy(backend, {
    get(target, name: string) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function" || name === "scope") return typeof value === "function" ? value.bind(target) : value;
      return (...args: unknown[]) => {
        const t0 = performance.now();
        const record = () => {
          const entry = times.get(name) ?? { ms: 0, calls: 0 };
          entry.ms += performance.now() - t0;
          entry.calls++;
          times.set(name, entry);
        };
        const result = value.apply(target, args);
        if (!(result instanceof Promise)) {
          record();
          return result;
        }
        return result.then(async (r) => {
          if (settle) await settle();
          record();
          return r;
        });
      };
    },
  });
}

/** One line per op, slowest first, per step. */
export function printTimes(times: OpTimes, steps: number): void {
  for (const [name, t] of [...times].sort((a, b) => b[1].ms - a[1].ms))
    console.log(`${name.padEnd(22)} ${(t.ms / steps).toFixed(1).padStart(8)} ms/step ${String(t.calls / steps).padStart(5)} calls`);
}
