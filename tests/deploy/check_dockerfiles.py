"""check_dockerfiles.py REPO [BUILD_DIR]: the images cannot be built here (no registry), so
their Dockerfiles are checked by reading: stages and base images (build and final stage of
one distribution, the worker's final stage NVIDIA's CUDA runtime), every COPY source present
in the repository and not filtered out by the Dockerfile's .dockerignore, every directory the
top-level CMakeLists.txt adds copied, the binaries taken from where CMake puts those targets
(with libdgptq_sentencepiece.so beside the daemon), a numeric non-root USER, the ENTRYPOINT
and the daemon's ports. With BUILD_DIR holding built daemons, runtime-packages.sh (which the
build stages run) must name a package for every library they load."""
import fnmatch
import json
import os
import re
import subprocess
import sys

DAEMONS = {  # Dockerfile suffix: daemon, ports it EXPOSEs
    "coordinator": ("dgptq-coordinator", {"50051", "9090"}),
    "worker": ("dgptq-worker", {"50061", "9091"}),
}


def instructions(path):
    """(KEYWORD, argument) pairs, continuation lines joined, comments dropped."""
    lines, out = [], []
    with open(path) as f:
        for raw in f:
            if raw.lstrip().startswith("#"):
                continue
            lines.append(raw.rstrip("\n"))
    text = "\n".join(lines).replace("\\\n", " ")
    for line in text.split("\n"):
        if line.strip():
            keyword, _, arg = line.strip().partition(" ")
            out.append((keyword.upper(), " ".join(arg.split())))
    return out


def cmake_target_dir(repo, name):
    """The folder whose CMakeLists.txt defines executable or module `name`."""
    for root, dirs, files in os.walk(repo, followlinks=True):
        dirs[:] = [d for d in dirs if not d.startswith((".", "build")) and d != "node_modules"]
        if "CMakeLists.txt" in files:
            with open(os.path.join(root, "CMakeLists.txt")) as f:
                if re.search(rf"add_(?:executable|library)\(\s*{re.escape(name)}(?=[\s)])", f.read()):
                    return os.path.relpath(root, repo)
    return None


def check(repo, suffix, errors):
    daemon, ports = DAEMONS[suffix]
    dockerfile = os.path.join(repo, "deploy/docker", f"Dockerfile.{suffix}")
    err = lambda msg: errors.append(f"Dockerfile.{suffix}: {msg}")
    with open(dockerfile + ".dockerignore") as f:
        ignored = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    args, stages = {}, []  # stages: [name, image, [(keyword, arg)...]]
    for keyword, arg in instructions(dockerfile):
        if keyword == "ARG" and not stages:
            name, _, default = arg.partition("=")
            args[name] = default.strip('"')
        elif keyword == "FROM":
            m = re.fullmatch(r"(\S+)(?: AS (\S+))?", arg, re.IGNORECASE)
            image = re.sub(r"\$\{(\w+)\}", lambda v: args[v.group(1)], m.group(1))
            stages.append([m.group(2), image, []])
        elif not stages:
            err(f"{keyword} before the first FROM")
        else:
            stages[-1][2].append((keyword, arg))
    if len(stages) != 2 or stages[0][0] != "build":
        err("want two stages, the first named 'build'")
        return
    build_image, final_image = stages[0][1], stages[1][1]
    if suffix == "worker":
        m = re.fullmatch(r"nvidia/cuda:([\d.]+)-devel-(ubuntu[\d.]+)", build_image)
        if not m or final_image != f"nvidia/cuda:{m.group(1)}-runtime-{m.group(2)}":
            err(f"want nvidia/cuda:V-devel-U -> V-runtime-U, got {build_image} -> {final_image}")
    elif final_image != build_image + "-slim":
        err(f"final stage {final_image} is not the build stage's distribution {build_image}")

    build = stages[0][2]
    copied = set()
    for keyword, arg in build:
        if keyword == "COPY" and not arg.startswith("--from"):
            *sources, _ = arg.split()
            for src in sources:
                copied.add(src.rstrip("/"))
                if not os.path.exists(os.path.join(repo, src)):
                    err(f"COPY source {src} is not in the repository")
                if any(fnmatch.fnmatch(src, p) for p in ignored):
                    err(f"COPY source {src} is excluded by the .dockerignore")
    with open(os.path.join(repo, "CMakeLists.txt")) as f:
        top = re.sub(r"if\(.*?endif\(\)", "", f.read(), flags=re.S)  # conditional subdirs aside
    for sub in ["CMakeLists.txt"] + re.findall(r"add_subdirectory\((\w+)\)", top):
        if sub not in copied:
            err(f"{sub} (needed to configure) is not copied into the build stage")

    run = " ".join(a for k, a in build if k == "RUN")
    targets = re.search(r"--target ([\w\- ]+?) &&", run)
    for target in targets.group(1).split() if targets else []:
        if not cmake_target_dir(repo, target):
            err(f"--target {target}: no such CMake target")
    cp = re.search(r"cp ((?:build/\S+ )+)/out/bin/", run)
    outputs = cp.group(1).split() if cp else []
    for out in outputs:
        folder, name = os.path.split(os.path.relpath(out, "build"))
        target = re.sub(r"^lib(.*)\.so$", r"\1", name)
        if cmake_target_dir(repo, target) != folder:
            err(f"{out}: CMake builds {target} in build/{cmake_target_dir(repo, target)}")
    names = {os.path.basename(o) for o in outputs}
    if not {daemon, "libdgptq_sentencepiece.so"} <= names:
        err(f"{daemon} and libdgptq_sentencepiece.so must go to /out/bin together")

    final = stages[1][2]
    if ("COPY", "--from=build /out/bin/ /opt/dgptq/bin/") not in final:
        err("the final stage must COPY --from=build /out/bin/ /opt/dgptq/bin/")
    users = [a for k, a in final if k == "USER"]
    if not users or not re.fullmatch(r"[1-9]\d*(:\d+)?", users[-1]):
        err("the final stage needs a numeric non-root USER (runAsNonRoot checks it)")
    entry = [a for k, a in final if k == "ENTRYPOINT"]
    try:
        entry = json.loads(entry[-1]) if entry else None
    except ValueError:  # shell form: the daemon would not get SIGTERM (sh -c is PID 1)
        entry = None
    if entry != [f"/opt/dgptq/bin/{daemon}"]:
        err(f'ENTRYPOINT must be ["/opt/dgptq/bin/{daemon}"] (exec form)')
    exposed = set(" ".join(a for k, a in final if k == "EXPOSE").split())
    if exposed != ports:
        err(f"EXPOSE {sorted(exposed)}, want {sorted(ports)}")


def check_runtime_packages(repo, build_dir, errors):
    files = [os.path.join(build_dir, p) for p in
             ("coordinator/dgptq-coordinator", "worker/dgptq-worker", "common/libdgptq_sentencepiece.so")]
    files = [f for f in files if os.path.exists(f) and open(f, "rb").read(4) == b"\x7fELF"]
    if not files:
        print("runtime-packages.sh: no built daemons in", build_dir, "- not run")
        return
    script = os.path.join(repo, "deploy/docker/runtime-packages.sh")
    run = subprocess.run([script] + files, capture_output=True, text=True)
    packages = run.stdout.split()
    if run.returncode != 0 or not packages:
        errors.append(f"runtime-packages.sh {files}: exit {run.returncode}\n{run.stderr}")
    else:
        print(f"runtime-packages.sh: {len(packages)} packages for {len(files)} files:", " ".join(packages))


def main():
    repo = sys.argv[1]
    errors = []
    for suffix in DAEMONS:
        check(repo, suffix, errors)
    if len(sys.argv) > 2:
        check_runtime_packages(repo, sys.argv[2], errors)
    print("".join(f"FAIL {e}\n" for e in errors) + f"Dockerfiles: {len(errors)} problems")
    return int(bool(errors))


if __name__ == "__main__":
    sys.exit(main())
