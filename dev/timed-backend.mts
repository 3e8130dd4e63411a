// A model backend with every op timed (wall clock until its promise settles, and the process's CPU
// time over the same span: all threads, so a CPU op's worker threads count, and on a shared machine
// the time other processes took from it does not), for dev/profile-step.mts (WebGPU) and
// dev/profile-step-cpu.mts; dev/profile-attention-cpu.mts times the WebAssembly kernels' exports with it.
export type OpTimes = Map<string, { ms: number; cpuMs: number; calls: number }>;

/**
 * `backend` with the time of each call added to times[op]; `settle`, when given, runs after each async
 * op before its clock stops; `label`, when given, names the entry of a call from the op and its arguments.
 */
export function timedBackend<T extends object>(
  backend: T,
  times: OpTimes,
  settle?: () => Promise<unknown>,
  label: (op: string, args: unknown[]) => string = (op) => op,
): T {
  return new Proxy(backend, {
    get(target, name: string) {
      const value = Reflect.get(target, name, target);
      if (typeof value !== "function" || name === "scope") return typeof value === "function" ? value.bind(target) : value;
      return (...args: unknown[]) => {
        const [t0, c0] = [performance.now(), process.cpuUsage()];
        const record = () => {
          const key = label(name, args);
          const entry = times.get(key) ?? { ms: 0, cpuMs: 0, calls: 0 };
          const cpu = process.cpuUsage(c0);
          entry.ms += performance.now() - t0;
          entry.cpuMs += (cpu.user + cpu.system) / 1000;
          entry.calls++;
          times.set(key, entry);
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
    console.log(
      `${name.padEnd(22)} ${(t.ms / steps).toFixed(1).padStart(8)} ms/step  CPU ${(t.cpuMs / steps).toFixed(1).padStart(7)} ms ${String(t.calls / steps).padStart(5)} calls`,
    );
}
