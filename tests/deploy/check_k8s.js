// node check_k8s.js REPO RENDERED.yaml...: validates every object that `kubectl kustomize`
// rendered against the Kubernetes (kubernetes-models) and Prometheus Operator schemas, with
// no unknown field and no unknown kind, then asserts how dgptq must be deployed (Recreate
// single coordinator, GPU workers, gRPC health probes on the daemons' ports, /dev/shm in
// memory, PDB, ServiceMonitors, flags the daemons know) and runs the workers' preStop drain
// script against a fake /metrics endpoint. Prints "N passed, M failed"; exit 1 on failure.
"use strict";
const assert = require("assert");
const childProcess = require("child_process");
const fs = require("fs");
const http = require("http");
const path = require("path");
const yaml = require("js-yaml");
const { unknownFields } = require("./strict_fields");

const [repo, ...files] = process.argv.slice(2);
let passed = 0, failed = 0;
async function check(name, fn) {
  try { await fn(); passed++; console.log(`ok   ${name}`); }
  catch (e) { failed++; console.log(`FAIL ${name}\n     ${String(e.message).replace(/\n/g, "\n     ")}`); }
}

// The model class and the declaration file of an apiVersion/kind; throws for unknown kinds.
function modelOf(obj) {
  const roots = ["kubernetes-models", "@kubernetes-models/prometheus-operator"];
  for (const root of roots) {
    const dts = path.join(__dirname, "node_modules", root, obj.apiVersion, `${obj.kind}.d.ts`);
    if (fs.existsSync(dts)) {
      const mod = require(`${root}/${obj.apiVersion}/${obj.kind}`);
      return { Model: mod[obj.kind], dts };
    }
  }
  throw new Error(`unknown kind ${obj.apiVersion}/${obj.kind}`);
}

// The flags a daemon's main.cc declares (CLI11 add_option/add_flag).
function daemonFlags(mainCc) {
  const src = fs.readFileSync(path.join(repo, mainCc), "utf8");
  return new Set([...src.matchAll(/add_(?:option|flag)\(\s*"(--[\w-]+)"/g)].map((m) => m[1]));
}

function checkRendering(file) {
  const objects = yaml.loadAll(fs.readFileSync(file, "utf8")).filter(Boolean);
  const label = path.basename(file);
  const find = (kind, name) => {
    const found = objects.filter((o) => o.kind === kind && (!name || o.metadata.name === name));
    assert.ok(found.length > 0, `no ${kind} ${name || ""}`);
    return name ? found[0] : found;
  };
  const matches = (selector, labels) =>
    Object.entries(selector).every(([k, v]) => labels && labels[k] === v);

  for (const obj of objects) {
    check(`${label}: ${obj.kind}/${obj.metadata.name} is valid`, () => {
      const { Model, dts } = modelOf(obj);
      new Model(obj).validate();
      const unknown = unknownFields(obj, dts);
      assert.deepStrictEqual(unknown, [], unknown.join("\n"));
    });
  }

  const config = find("ConfigMap").find((c) => c.metadata.name.startsWith("dgptq-config"));
  const coordinator = () => find("Deployment", "dgptq-coordinator");
  const workers = () => find("StatefulSet", "dgptq-worker");
  const containerOf = (w) => w.spec.template.spec.containers[0];
  const flag = (c, name) => {
    const arg = c.args.find((a) => a.startsWith(`${name}=`));
    assert.ok(arg, `${c.name} has no ${name}`);
    return arg.slice(name.length + 1);
  };
  const port = (address) => Number(address.split(":").pop());

  check(`${label}: coordinator is one replica, Recreate`, () => {
    assert.strictEqual(coordinator().spec.replicas, 1);
    assert.strictEqual(coordinator().spec.strategy.type, "Recreate");
  });
  for (const [workload, main, grpcPort, metricsPort] of [
    [coordinator, "coordinator/main.cc", 50051, 9090],
    [workers, "worker/daemon/main.cc", 50061, 9091]]) {
    check(`${label}: ${main}: flags, ports and gRPC health probes`, () => {
      const w = workload();
      const c = containerOf(w);
      const known = daemonFlags(main);
      for (const a of c.args) assert.ok(known.has(a.split("=")[0]), `${a}: ${main} has no such flag`);
      assert.strictEqual(port(flag(c, "--listen")), grpcPort);
      assert.strictEqual(port(flag(c, "--metrics-listen")), metricsPort);
      const ports = Object.fromEntries(c.ports.map((p) => [p.name, p.containerPort]));
      assert.deepStrictEqual(ports, { grpc: grpcPort, metrics: metricsPort });
      for (const probe of ["readinessProbe", "livenessProbe"]) {
        assert.deepStrictEqual(Object.keys(c[probe]).filter((k) => /^(grpc|httpGet|tcpSocket|exec)$/.test(k)), ["grpc"]);
        assert.strictEqual(c[probe].grpc.port, grpcPort, `${probe} port`);
        assert.ok(!c[probe].grpc.service, `${probe} checks the server's overall health ("")`);
      }
      // Every $(VAR) in the args is defined: a missing one reaches the daemon verbatim.
      const env = new Set((c.env || []).map((e) => e.name));
      for (const from of c.envFrom || []) {
        assert.strictEqual(from.configMapRef.name, config.metadata.name);
        Object.keys(config.data).forEach((k) => env.add(k));
      }
      for (const a of c.args) {
        for (const [, v] of a.matchAll(/\$\((\w+)\)/g)) assert.ok(env.has(v), `${a}: $(${v}) is not set`);
      }
      const securityContext = w.spec.template.spec.securityContext;
      assert.strictEqual(securityContext.runAsNonRoot, true);
      const data = w.spec.template.spec.volumes.find((v) => v.name === "data");
      const pvc = find("PersistentVolumeClaim", data.persistentVolumeClaim.claimName);
      assert.deepStrictEqual(pvc.spec.accessModes, ["ReadWriteMany"]);
      assert.strictEqual(c.volumeMounts.find((m) => m.name === "data").mountPath, "/data");
      const service = find("Service", w.metadata.name);
      assert.ok(matches(service.spec.selector, w.spec.template.metadata.labels), "Service selects the pods");
      assert.ok(matches(w.spec.selector.matchLabels, w.spec.template.metadata.labels));
      const servicePorts = Object.fromEntries(service.spec.ports.map((p) => [p.name, p.port]));
      assert.deepStrictEqual(servicePorts, { grpc: grpcPort, metrics: metricsPort });
      const monitor = find("ServiceMonitor", w.metadata.name);
      assert.ok(matches(monitor.spec.selector.matchLabels, service.metadata.labels), "ServiceMonitor selects the Service");
      assert.deepStrictEqual(monitor.spec.endpoints.map((e) => e.port), ["metrics"]);
      assert.strictEqual(service.metadata.labels[monitor.spec.jobLabel], w.metadata.name, "job label");
    });
  }
  check(`${label}: workers: GPU, pod IP as --host, coordinator Service, /dev/shm, drain, PDB`, () => {
    const w = workers();
    const c = containerOf(w);
    assert.strictEqual(String(c.resources.limits["nvidia.com/gpu"]), "1");
    assert.strictEqual(flag(c, "--device"), "cuda");
    assert.strictEqual(flag(c, "--host"), "$(POD_IP)");
    assert.strictEqual(c.env.find((e) => e.name === "POD_IP").valueFrom.fieldRef.fieldPath, "status.podIP");
    assert.strictEqual(flag(c, "--name"), "$(POD_NAME)");
    assert.strictEqual(c.env.find((e) => e.name === "POD_NAME").valueFrom.fieldRef.fieldPath, "metadata.name");
    const service = find("Service", "dgptq-coordinator");
    const grpc = service.spec.ports.find((p) => p.name === "grpc").port;
    assert.strictEqual(flag(c, "--coordinator"), "$(DGPTQ_COORDINATOR)");
    assert.strictEqual(config.data.DGPTQ_COORDINATOR, `${service.metadata.name}:${grpc}`);
    const shm = c.volumeMounts.find((m) => m.mountPath === "/dev/shm");
    assert.ok(shm, "no /dev/shm mount");
    assert.strictEqual(w.spec.template.spec.volumes.find((v) => v.name === shm.name).emptyDir.medium, "Memory");
    assert.ok(config.data.NCCL_SOCKET_IFNAME && config.data.NCCL_DEBUG, "NCCL settings");
    assert.strictEqual(w.spec.serviceName, "dgptq-worker");
    assert.strictEqual(find("Service", "dgptq-worker").spec.clusterIP, "None");
    const script = c.lifecycle.preStop.exec.command[2];
    assert.ok(script.includes(`/dev/tcp/127.0.0.1/${port(flag(c, "--metrics-listen"))}`), "drain scrapes the metrics port");
    assert.ok(w.spec.template.spec.terminationGracePeriodSeconds > Number(config.data.DGPTQ_DRAIN_SECONDS),
              "terminationGracePeriodSeconds leaves SIGTERM time after the drain");
    const pdbs = find("PodDisruptionBudget").filter((p) => matches(p.spec.selector.matchLabels, w.spec.template.metadata.labels));
    assert.strictEqual(pdbs.length, 1, "one PDB selects the workers");
  });
  return objects;
}

// Runs the workers' preStop script with the scrape pointed at a fake /metrics server.
function drain(script, busy, seconds) {
  return new Promise((resolve, reject) => {
    const server = http.createServer((req, res) => {
      res.setHeader("Connection", "close");
      res.end(`# TYPE dgptq_worker_busy gauge\ndgptq_worker_busy ${busy()}\n`);
    });
    server.listen(0, "127.0.0.1", () => {
      const patched = script.replace("/dev/tcp/127.0.0.1/9091", `/dev/tcp/127.0.0.1/${server.address().port}`);
      const start = Date.now();
      childProcess.execFile("/bin/bash", ["-c", patched], { env: { ...process.env, DGPTQ_DRAIN_SECONDS: String(seconds) }, timeout: 60000 },
        (err) => { server.close(); err ? reject(err) : resolve((Date.now() - start) / 1000); });
    });
  });
}

async function main() {
  const rendered = files.map(checkRendering);
  const script = containerOfWorker(rendered[0]).lifecycle.preStop.exec.command[2];
  await check("drain: an idle worker stops at once", async () => {
    assert.ok(await drain(script, () => 0, 600) < 5);
  });
  await check("drain: waits while busy, until the job ends", async () => {
    let scrapes = 0;
    const took = await drain(script, () => (++scrapes <= 2 ? 1 : 0), 600);
    assert.ok(scrapes === 3 && took >= 3 && took < 15, `scrapes ${scrapes}, ${took} s`);
  });
  await check("drain: gives up after DGPTQ_DRAIN_SECONDS", async () => {
    const took = await drain(script, () => 1, 3);
    assert.ok(took >= 3 && took < 10, `${took} s`);
  });
  await check("drain: no metrics endpoint, no wait", async () => {
    const closed = script.replace("/dev/tcp/127.0.0.1/9091", "/dev/tcp/127.0.0.1/1");
    const took = await new Promise((res, rej) => childProcess.execFile("/bin/bash", ["-c", closed],
      { timeout: 30000 }, (err) => (err ? rej(err) : res(0))));
    assert.strictEqual(took, 0);
  });
  await check("alerts: prometheusrule.sh wraps alerts.yml in a valid PrometheusRule", () => {
    const out = childProcess.execFileSync(path.join(repo, "deploy/prometheus/prometheusrule.sh"),
                                          ["release=kube-prometheus-stack"], { encoding: "utf8" });
    const rule = yaml.load(out);
    const { Model, dts } = modelOf(rule);
    new Model(rule).validate();
    assert.deepStrictEqual(unknownFields(rule, dts), []);
    assert.strictEqual(rule.metadata.labels.release, "kube-prometheus-stack");
    const alerts = yaml.load(fs.readFileSync(path.join(repo, "deploy/prometheus/alerts.yml"), "utf8"));
    assert.deepStrictEqual(rule.spec, alerts);
  });
  console.log(`${passed} passed, ${failed} failed`);
  process.exit(failed ? 1 : 0);
}

function containerOfWorker(objects) {
  return objects.find((o) => o.kind === "StatefulSet").spec.template.spec.containers[0];
}

main();
