#!/usr/bin/python3
"""Submits a quantization job to a dgptq coordinator and watches it to the end.

A small example of the Coordinator API (proto/dgptq/v1/coordinator.proto) from Python, with
Debian's python3-grpcio and python3-protobuf only. It needs stubs generated from our protos:

    protoc -Iproto --python_out=STUBS --grpc_out=STUBS \
        --plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin proto/dgptq/v1/*.proto
    /usr/bin/python3 dgptq_client.py --stubs STUBS --model /shared/llama --out /shared/llama-4bit \
        --calib /shared/calib.txt

It prints "job <id>" first, then one line per event (JSON lines with --json), then the final
state. Exit codes match `dgptq submit --wait`: 0 succeeded, 1 failed (or an error), 2 usage,
3 cancelled, 4 coordinator unreachable.

Security as for `dgptq submit`: --tls-ca (TLS), --tls-cert/--tls-key (mutual TLS),
--tls-server-name, and the client bearer token from --token-file or $DGPTQ_TOKEN.
"""
import argparse
import os
import sys
import time
import uuid

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_CANCELLED, EXIT_UNREACHABLE = 0, 1, 2, 3, 4
MAX_ATTEMPTS = 4  # per call while the coordinator answers UNAVAILABLE
INITIAL_BACKOFF_S = 0.25  # doubled before each further retry
RPC_TIMEOUT_S = 30


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--coordinator", default=os.environ.get("DGPTQ_COORDINATOR", "localhost:50051"),
                   help="host:port (default: $DGPTQ_COORDINATOR or localhost:50051)")
    p.add_argument("--stubs", help="directory holding the generated dgptq/v1/*_pb2*.py")
    p.add_argument("--model", required=True, help="Hugging Face model directory")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--calib", default="", help="calibration data (default: coordinator's)")
    p.add_argument("--workers", type=int, default=0, help="ranks (default 1)")
    p.add_argument("--bits", type=int, default=0, help="2, 3, 4 or 8 (default 4)")
    p.add_argument("--group-size", type=int, default=0, help="-1 or a positive size (default 128)")
    p.add_argument("--samples", type=int, default=0, help="calibration samples (default 128)")
    p.add_argument("--seq-len", type=int, default=0, help="tokens per sample (default 2048)")
    p.add_argument("--format", choices=["gptq", "compressed-tensors"], default=None)
    p.add_argument("--rtn", action="store_true", help="round to nearest (no calibration)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing output model")
    p.add_argument("--request-id", default="", help="idempotency key (default: a random UUID)")
    p.add_argument("--connect-timeout", type=float, default=5.0, help="seconds")
    p.add_argument("--json", action="store_true", help="events as JSON lines")
    p.add_argument("--tls-ca", help="PEM CA certificates: connect with TLS")
    p.add_argument("--tls-cert", help="PEM client certificate chain (mutual TLS)")
    p.add_argument("--tls-key", help="PEM private key of --tls-cert")
    p.add_argument("--tls-server-name", help="name the coordinator's certificate must carry")
    p.add_argument("--token-file", help="file holding the client bearer token "
                   "(default: $DGPTQ_TOKEN, if set)")
    return p.parse_args()


def read_file(path):
    with open(path, "rb") as f:
        return f.read()


def make_channel(grpc, args):
    """A plaintext channel, or TLS with --tls-ca (mutual with --tls-cert and --tls-key)."""
    if not args.tls_ca:
        return grpc.insecure_channel(args.coordinator)
    creds = grpc.ssl_channel_credentials(
        read_file(args.tls_ca), read_file(args.tls_key) if args.tls_key else None,
        read_file(args.tls_cert) if args.tls_cert else None)
    options = [("grpc.ssl_target_name_override", args.tls_server_name)] \
        if args.tls_server_name else []
    return grpc.secure_channel(args.coordinator, creds, options=options)


def call_metadata(args):
    """The bearer token as call metadata: --token-file, else $DGPTQ_TOKEN, else none. Metadata
    rather than call credentials, which grpc sends over TLS only."""
    token = read_file(args.token_file).decode().strip() if args.token_file else \
        os.environ.get("DGPTQ_TOKEN", "")
    return (("authorization", "Bearer " + token),) if token else ()


def state_name(job_pb2, state):
    return job_pb2.JobState.Name(state).replace("JOB_STATE_", "")


def event_line(job_pb2, ev):
    kind = ev.WhichOneof("kind")
    if kind == "state_change":
        c = ev.state_change
        line = "%s -> %s" % (state_name(job_pb2, c.from_state), state_name(job_pb2, c.to_state))
        return line + (": " + c.reason if c.reason else "")
    if kind == "progress":
        p = ev.progress
        phase = job_pb2.Phase.Name(p.phase).replace("PHASE_", "").lower()
        return "rank %d layer %d/%d %s %s %d/%d" % (p.rank, p.layer + 1, p.num_layers, phase,
                                                    p.module, p.done, p.total)
    if kind == "module_loss":
        m = ev.module_loss
        return "rank %d layer %d %s loss %.6g" % (m.rank, m.layer, m.module, m.loss)
    if kind == "error":
        e = ev.error
        return "%s rank %d code %d: %s" % ("fatal" if e.fatal else "error", e.rank, e.code,
                                           e.message)
    return "event"


def call_with_retry(grpc, fn, request, metadata):
    """Calls a unary RPC, retrying UNAVAILABLE with backoff; the request (and so its request_id)
    is the same on every attempt, so a retried SubmitJob never creates a second job."""
    backoff = INITIAL_BACKOFF_S
    for attempt in range(MAX_ATTEMPTS):
        try:
            return fn(request, timeout=RPC_TIMEOUT_S, metadata=metadata)
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or attempt + 1 == MAX_ATTEMPTS:
                raise
        time.sleep(backoff)
        backoff *= 2


def watch(grpc, pb, stub, job_id, json_lines, metadata):
    """Prints every event once, reopening a broken stream from the next index; returns the
    final Job."""
    coordinator_pb2, job_pb2, json_format = pb
    next_index, failures, backoff = 0, 0, INITIAL_BACKOFF_S
    while True:
        request = coordinator_pb2.WatchJobRequest(job_id=job_id, from_index=next_index)
        try:
            for ev in stub.WatchJob(request, metadata=metadata):
                if ev.index < next_index:
                    continue
                next_index, failures, backoff = ev.index + 1, 0, INITIAL_BACKOFF_S
                if json_lines:
                    print(json_format.MessageToJson(ev, indent=None), flush=True)
                else:
                    print("[%d] %s" % (ev.index, event_line(job_pb2, ev)), flush=True)
            job = call_with_retry(grpc, stub.GetJob, coordinator_pb2.GetJobRequest(job_id=job_id),
                                  metadata)
            if job.state in (job_pb2.JOB_STATE_SUCCEEDED, job_pb2.JOB_STATE_FAILED,
                             job_pb2.JOB_STATE_CANCELLED):
                return job
        except grpc.RpcError as e:
            # We never cancel the stream: CANCELLED comes from a coordinator shutting down.
            if e.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED):
                raise
        failures += 1
        if failures >= MAX_ATTEMPTS:
            raise RuntimeError("WatchJob stream of %s kept breaking" % job_id)
        time.sleep(backoff)
        backoff *= 2


def build_spec(job_pb2, args):
    spec = job_pb2.JobSpec(model_path=os.path.abspath(args.model),
                           output_path=os.path.abspath(args.out),
                           num_workers=args.workers, overwrite=args.overwrite)
    spec.quantization.bits = args.bits
    spec.quantization.group_size = args.group_size
    spec.quantization.rtn = args.rtn
    if args.calib:
        spec.calibration.path = os.path.abspath(args.calib)
    spec.calibration.samples = args.samples
    spec.calibration.seq_len = args.seq_len
    if args.format:
        spec.output_format = {"gptq": job_pb2.OUTPUT_FORMAT_GPTQ,
                              "compressed-tensors": job_pb2.OUTPUT_FORMAT_COMPRESSED_TENSORS
                              }[args.format]
    return spec


def main():
    args = parse_args()
    if args.stubs:
        sys.path.insert(0, args.stubs)
    import grpc
    from google.protobuf import json_format
    from dgptq.v1 import coordinator_pb2, coordinator_pb2_grpc, job_pb2

    try:
        channel, metadata = make_channel(grpc, args), call_metadata(args)
    except OSError as e:
        print("dgptq_client: %s" % e, file=sys.stderr)
        return EXIT_USAGE
    try:
        grpc.channel_ready_future(channel).result(timeout=args.connect_timeout)
    except grpc.FutureTimeoutError:
        print("dgptq_client: coordinator %s not reachable within %gs" %
              (args.coordinator, args.connect_timeout), file=sys.stderr)
        return EXIT_UNREACHABLE
    stub = coordinator_pb2_grpc.CoordinatorStub(channel)
    request = coordinator_pb2.SubmitJobRequest(spec=build_spec(job_pb2, args),
                                               request_id=args.request_id or str(uuid.uuid4()))
    try:
        job = call_with_retry(grpc, stub.SubmitJob, request, metadata).job
        print("job %s" % job.job_id, flush=True)
        job = watch(grpc, (coordinator_pb2, job_pb2, json_format), stub, job.job_id, args.json,
                    metadata)
    except grpc.RpcError as e:
        print("dgptq_client: %s: %s" % (e.code().name, e.details()), file=sys.stderr)
        unreachable = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
        return EXIT_UNREACHABLE if e.code() in unreachable else EXIT_FAILED
    except RuntimeError as e:
        print("dgptq_client: UNAVAILABLE: %s" % e, file=sys.stderr)
        return EXIT_UNREACHABLE
    finally:
        channel.close()
    reason = ": " + job.reason if job.reason else ""
    print("job %s %s%s" % (job.job_id, state_name(job_pb2, job.state), reason), flush=True)
    return {job_pb2.JOB_STATE_SUCCEEDED: EXIT_OK,
            job_pb2.JOB_STATE_CANCELLED: EXIT_CANCELLED}.get(job.state, EXIT_FAILED)


if __name__ == "__main__":
    sys.exit(main())
