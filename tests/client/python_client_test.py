"""Runs the Python client example (coordinator/client/python/dgptq_client.py) against a real
dgptq-coordinator: a submitted job cancelled with `dgptq cancel` makes the example print the
CANCELLED state change and exit 3; an invalid spec exits 1; an address nobody listens on exits 4.

Usage: python3 python_client_test.py --stubs DIR --client PY --coordinator-bin BIN --dgptq-bin BIN
"""
import argparse
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

EXIT_FAILED, EXIT_CANCELLED, EXIT_UNREACHABLE = 1, 3, 4


def check(cond, what):
    if not cond:
        print("FAIL: " + what, file=sys.stderr)
        sys.exit(1)


def wait_for_port(path, proc, limit_s=20):
    end = time.time() + limit_s
    while time.time() < end and proc.poll() is None:
        try:
            with open(path) as f:
                text = f.read().strip()
            if text and int(text) > 0:
                return int(text)
        except (OSError, ValueError):
            pass
        time.sleep(0.02)
    return 0


def unused_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_client(args, extra):
    return [sys.executable, args.client, "--stubs", args.stubs] + extra


def main():
    p = argparse.ArgumentParser()
    for name in ("--stubs", "--client", "--coordinator-bin", "--dgptq-bin"):
        p.add_argument(name, required=True)
    args = p.parse_args()

    with tempfile.TemporaryDirectory(prefix="dgptq-pyclient-") as tmp:
        model = os.path.join(tmp, "model")
        subprocess.run([args.dgptq_bin, "make-model", "--arch", "llama", "--out", model,
                        "--hidden", "64", "--layers", "2", "--heads", "4", "--kv-heads", "2",
                        "--intermediate", "128", "--vocab", "300"],
                       check=True, stdout=subprocess.DEVNULL, timeout=60)
        calib = os.path.join(tmp, "calib.txt")
        with open(calib, "w") as f:
            f.write("Once upon a time there was a tiny model.\n")
        spec = ["--model", model, "--out", os.path.join(tmp, "out"), "--calib", calib,
                "--samples", "4", "--seq-len", "16"]

        port_file = os.path.join(tmp, "port")
        log = open(os.path.join(tmp, "coordinator.log"), "w")
        coordinator = subprocess.Popen([args.coordinator_bin, "--listen", "127.0.0.1:0", "--metrics-listen", "",
                                        "--port-file", port_file], stdout=log, stderr=log)
        try:
            port = wait_for_port(port_file, coordinator)
            check(port > 0, "coordinator did not write its port")
            address = "127.0.0.1:%d" % port

            # Submit and watch; cancel from another process once the job id is printed.
            client = subprocess.Popen(run_client(args, ["--coordinator", address] + spec),
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            first = client.stdout.readline().strip()
            check(first.startswith("job "), "first line should name the job: %r" % first)
            job_id = first.split()[1]
            cancel = subprocess.run([args.dgptq_bin, "cancel", job_id, "--coordinator", address],
                                    capture_output=True, text=True, timeout=30)
            check(cancel.returncode == 0, "dgptq cancel: " + cancel.stderr)
            out, err = client.communicate(timeout=60)
            check(client.returncode == EXIT_CANCELLED,
                  "exit %d, want 3: %s%s" % (client.returncode, out, err))
            check("-> CANCELLED" in out, "no CANCELLED state change printed: " + out)
            check(out.splitlines()[-1].startswith("job %s CANCELLED" % job_id),
                  "last line should give the final state: " + out)

            # An invalid spec: the server's INVALID_ARGUMENT, exit 1.
            bad = subprocess.run(run_client(args, ["--coordinator", address, "--bits", "5"]
                                            + spec), capture_output=True, text=True, timeout=60)
            check(bad.returncode == EXIT_FAILED, "bits 5: exit %d: %s" % (bad.returncode,
                                                                         bad.stderr))
            check("INVALID_ARGUMENT" in bad.stderr, "bits 5: " + bad.stderr)
        finally:
            coordinator.send_signal(signal.SIGTERM)
            try:
                coordinator.wait(timeout=20)
            except subprocess.TimeoutExpired:
                coordinator.kill()
                coordinator.wait()
            log.close()

        # Nobody listening: exit 4 within the connect timeout.
        start = time.time()
        gone = subprocess.run(run_client(args, ["--coordinator", "127.0.0.1:%d" % unused_port(),
                                                "--connect-timeout", "1"] + spec),
                              capture_output=True, text=True, timeout=60)
        check(gone.returncode == EXIT_UNREACHABLE, "unreachable: exit %d: %s" %
              (gone.returncode, gone.stderr))
        check(time.time() - start < 10, "unreachable took %.1fs" % (time.time() - start))
    print("python client example ok")


if __name__ == "__main__":
    main()
