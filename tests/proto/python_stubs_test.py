"""Imports the Python stubs generated from proto/dgptq/v1 and checks them (issue 4).

Usage: python3 python_stubs_test.py GENERATED_DIR
"""
import sys

sys.path.insert(0, sys.argv[1])

from dgptq.v1 import coordinator_pb2, coordinator_pb2_grpc, job_pb2  # noqa: E402

spec = job_pb2.JobSpec(model_path="/m", output_path="/o", num_workers=3)
spec.quantization.bits = 4
request = coordinator_pb2.SubmitJobRequest(spec=spec, request_id="r-1")
back = coordinator_pb2.SubmitJobRequest.FromString(request.SerializeToString())
assert back == request, back
assert back.spec.quantization.bits == 4
for rpc in ("SubmitJob", "GetJob", "ListJobs", "WatchJob", "CancelJob", "RegisterWorker",
            "Heartbeat", "Control"):
    assert hasattr(coordinator_pb2_grpc.CoordinatorServicer, rpc), rpc
assert job_pb2.JOB_STATE_CANCELLED == 6
print("python stubs ok")
