"""Runs the Python client example (coordinator/client/python/dgptq_client.py) against a real
dgptq-coordinator: a submitted job cancelled with `dgptq cancel` makes the example print the
CANCELLED state change and exit 3; an invalid spec exits 1; an address nobody listens on exits 4;
against a TLS coordinator that needs a client token, the example connects with --tls-ca and sends
the token from --token-file or $DGPTQ_TOKEN (without one: UNAUTHENTICATED, exit 1).

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


def start_coordinator(args, tmp, name, flags):
    """A coordinator on 127.0.0.1 with `flags`: (process, log file, port)."""
    port_file = os.path.join(tmp, name + ".port")
    log = open(os.path.join(tmp, name + ".log"), "w")
    proc = subprocess.Popen([args.coordinator_bin, "--listen", "127.0.0.1:0", "--metrics-listen",
                             "", "--port-file", port_file] + flags, stdout=log, stderr=log)
    return proc, log, wait_for_port(port_file, proc)


def stop(proc, log):
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    log.close()


def check_tls_and_token(args, tmp, spec):
    """A TLS coordinator needing a client token: the spec is refused as INVALID_ARGUMENT once
    TLS and the token pass, and as UNAUTHENTICATED without the token."""
    cert, key, token = (os.path.join(tmp, n) for n in ("server.pem", "server.key", "token"))
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", cert, "-days",
                    "1", "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True, timeout=60)
    with open(token, "w") as f:
        f.write("py-client-token\n")
    coordinator, log, port = start_coordinator(
        args, tmp, "tls", ["--tls-cert", cert, "--tls-key", key, "--client-token-file", token])
    try:
        check(port > 0, "TLS coordinator did not write its port")
        base = ["--coordinator", "127.0.0.1:%d" % port, "--tls-ca", cert, "--bits", "5"] + spec
        env = dict(os.environ, DGPTQ_TOKEN="py-client-token")
        for extra, environ, want in ((["--token-file", token], None, "INVALID_ARGUMENT"),
                                     ([], env, "INVALID_ARGUMENT"),
                                     ([], None, "UNAUTHENTICATED")):
            r = subprocess.run(run_client(args, base + extra), capture_output=True, text=True,
                               timeout=60, env=environ)
            check(r.returncode == EXIT_FAILED and want in r.stderr,
                  "TLS %s: exit %d: %s" % (want, r.returncode, r.stderr))
    finally:
        stop(coordinator, log)


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

        coordinator, log, port = start_coordinator(args, tmp, "coordinator", [])
        try:
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
            stop(coordinator, log)
        check_tls_and_token(args, tmp, spec)

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
