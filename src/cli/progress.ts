// Training progress, on stderr: a bar with step, loss, tokens/s and ETA on a terminal; a plain line
// every few steps otherwise (logs, CI).
import cliProgress from "cli-progress";
import type { StepLog } from "../run/train.js";

export function trainingProgress(print: (line: string) => void): { onStep(log: StepLog, total: number): void; stop(): void } {
  let bar: cliProgress.SingleBar | null = null;
  let last = 0;
  return {
    onStep(log, total) {
      const values = { loss: log.loss.toFixed(3), speed: log.tokensPerSecond.toFixed(0), val: log.validationLoss?.toFixed(3) ?? "-" };
      if (process.stderr.isTTY) {
        if (!bar) {
          bar = new cliProgress.SingleBar(
            { format: "step {value}/{total} [{bar}] loss {loss} | val {val} | {speed} tok/s | ETA {eta_formatted}", hideCursor: true },
            cliProgress.Presets.shades_classic,
          );
          bar.start(total, log.step, values);
        }
        bar.update(log.step + 1, values);
        return;
      }
      const now = Date.now();
      if (log.step + 1 === total || log.validationLoss !== undefined || now - last > 10_000) {
        last = now;
        const eta = ((total - log.step - 1) * log.seconds) / (log.step + 1);
        print(`step ${log.step + 1}/${total}  loss ${values.loss}  val ${values.val}  ${values.speed} tok/s  ETA ${eta.toFixed(0)} s`);
      }
    },
    stop() {
      bar?.stop();
    },
  };
}
