# numpy's side of dev/gemm-bench.mts: one product in float32, its best call, as JSON (with no product:
# only which BLAS runs).
# Which BLAS kernel runs: threadpoolctl where installed, else the bundled OpenBLAS's own report.
import ctypes, glob, json, os, sys, time
import numpy as np

def blas_info():
    try:
        from threadpoolctl import threadpool_info
        return "; ".join(f"{i.get('internal_api')} {i.get('version')} {i.get('architecture')} x{i.get('num_threads')}" for i in threadpool_info())
    except ImportError:
        pass
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*.so*"))
    for path in libs:
        lib = ctypes.CDLL(path)
        for prefix in ("scipy_openblas_", "openblas_", "scipy_"):
            for suffix in ("64_", ""):
                try:
                    core = getattr(lib, f"{prefix}get_corename{suffix}")
                    config = getattr(lib, f"{prefix}get_config{suffix}")
                    threads = getattr(lib, f"{prefix}get_num_threads{suffix}")
                except AttributeError:
                    continue
                core.restype = config.restype = ctypes.c_char_p
                return f"numpy {np.__version__}, {config().decode()}, core {core().decode()}, {threads()} threads (threadpoolctl not installed)"
    return f"numpy {np.__version__} (BLAS not identified)"

def best(run, seconds):
    run()
    times = []
    started = time.perf_counter()
    while len(times) < 3 or time.perf_counter() - started < seconds:
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)

def main():
    request = json.loads(sys.argv[1])
    c = request["case"]
    if c is None:
        print(json.dumps({"blas": blas_info(), "seconds": 0}))
        return
    rng = np.random.default_rng(1)
    M, N, K = c["M"], c["N"], c["K"]
    r = lambda *shape: rng.uniform(-1, 1, shape).astype(np.float32)
    if c["pass"] == "forward":  # x[M, K] · w[N, K]ᵀ
        x, w = r(M, K), r(N, K)
        run = lambda: x @ w.T
    elif c["pass"] == "dX":  # dy[M, K] · w[K, N]
        dy, w = r(M, K), r(K, N)
        run = lambda: dy @ w
    else:  # dw[M, N] += dy[K, M]ᵀ · x[K, N]
        dy, x, dw = r(K, M), r(K, N), np.zeros((M, N), np.float32)
        def run():
            dw.__iadd__(dy.T @ x)
    print(json.dumps({"blas": blas_info(), "seconds": best(run, request["seconds"])}))

main()
