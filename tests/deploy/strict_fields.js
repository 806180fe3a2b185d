// Unknown-field check for Kubernetes objects. The JSON schemas in kubernetes-models allow
// additional properties, so a misspelt or misplaced field (`resource:` for `resources:`,
// `grpc` under the container instead of the probe) passes their validate(); the API server
// drops or rejects it. The packages' TypeScript declarations list every field, so this walks
// an object alongside the declared type of its kind and reports each key the type lacks.
"use strict";
const fs = require("fs");
const path = require("path");

const NODE_MODULES = path.join(__dirname, "node_modules");
const OPEN_TYPES = new Set(["any", "unknown", "object", "string", "number", "boolean", "null",
                            "undefined", "true", "false"]);

function tokenize(src) {
  src = src.replace(/\/\*[\s\S]*?\*\//g, "").replace(/\/\/.*$/gm, "");
  const re = /\s*("(?:[^"\\]|\\.)*"|[A-Za-z_$][\w$]*|-?\d+(?:\.\d+)?|\S)/gy;
  const tokens = [];
  for (let m; (m = re.exec(src)) && m[1] !== undefined;) tokens.push(m[1]);
  return tokens;
}

// Types: {kind: "object", props: Map}, {kind: "map", value}, {kind: "array", item},
// {kind: "ref", name}, {kind: "union", members}, {kind: "open"}.
class Parser {
  constructor(tokens, pos) { this.t = tokens; this.i = pos; }
  peek() { return this.t[this.i]; }
  next() { return this.t[this.i++]; }
  expect(tok) {
    const got = this.next();
    if (got !== tok) throw new Error(`d.ts parse: expected ${tok}, got ${got}`);
  }
  type() {
    const members = [this.primary()];
    while (this.peek() === "|") { this.next(); members.push(this.primary()); }
    return members.length === 1 ? members[0] : { kind: "union", members };
  }
  primary() {
    let ty;
    const tok = this.next();
    if (tok === "{") ty = this.objectBody();
    else if (tok === "(") { ty = this.type(); this.expect(")"); }
    else if (tok === "Array") { this.expect("<"); ty = { kind: "array", item: this.type() }; this.expect(">"); }
    else if (tok.startsWith('"') || /^-?\d/.test(tok) || OPEN_TYPES.has(tok)) ty = { kind: "open" };
    else if (/^[A-Za-z_$]/.test(tok)) ty = { kind: "ref", name: tok };
    else throw new Error(`d.ts parse: unexpected ${tok}`);
    while (this.peek() === "[" && this.t[this.i + 1] === "]") { this.i += 2; ty = { kind: "array", item: ty }; }
    return ty;
  }
  objectBody() {  // after "{"
    const props = new Map();
    let map = null;
    while (this.peek() !== "}") {
      if (this.peek() === "[") {  // [key: string]: T
        this.next(); this.next(); this.expect(":"); this.next(); this.expect("]"); this.expect(":");
        map = { kind: "map", value: this.type() };
      } else {
        const key = this.next().replace(/^"|"$/g, "");
        if (this.peek() === "?") this.next();
        this.expect(":");
        props.set(key, this.type());
      }
      if (this.peek() === ";" || this.peek() === ",") this.next();
    }
    this.next();
    return map && props.size === 0 ? map : { kind: "object", props };
  }
}

class Declarations {
  constructor() { this.files = new Map(); }
  file(file) {
    if (!this.files.has(file)) {
      const tokens = tokenize(fs.readFileSync(file, "utf8"));
      const imports = new Map(), aliases = new Map(), decls = new Map();
      for (let i = 0; i < tokens.length; i++) {
        if (tokens[i] === "import" && tokens[i + 1] === "{") {
          let j = i + 2;
          const names = [];
          for (; tokens[j] !== "}"; j++) {
            if (tokens[j] === ",") continue;
            if (tokens[j + 1] === "as") { names.push([tokens[j + 2], tokens[j]]); j += 2; }
            else names.push([tokens[j], tokens[j]]);
          }
          const from = tokens[j + 2].slice(1, -1);
          for (const [local, remote] of names) imports.set(local, { from, remote });
        } else if (tokens[i] === "export" && tokens[i + 1] === "{") {
          for (let j = i + 2; tokens[j] !== "}"; j++) {
            if (tokens[j + 1] === "as") { aliases.set(tokens[j + 2], tokens[j]); j += 2; }
          }
        } else if (tokens[i] === "interface") {
          let j = i + 2;
          while (tokens[j] !== "{") j++;  // `extends TypeMeta`: its fields are declared too
          decls.set(tokens[i + 1], { tokens, pos: j });
        } else if (tokens[i] === "type" && tokens[i + 2] === "=") {
          decls.set(tokens[i + 1], { tokens, pos: i + 3 });
        }
      }
      this.files.set(file, { dir: path.dirname(file), imports, aliases, decls, types: new Map() });
    }
    return this.files.get(file);
  }
  // The parsed type `name` as seen from `file`; null for names that declare no fields.
  resolve(file, name) {
    const f = this.file(file);
    const local = f.aliases.get(name) || name;
    if (f.types.has(local)) return f.types.get(local);
    if (f.decls.has(local)) {
      const { tokens, pos } = f.decls.get(local);
      const parser = new Parser(tokens, pos);
      const ty = tokens[pos] === "{" ? (parser.next(), parser.objectBody()) : parser.type();
      const entry = { file, ty };
      f.types.set(local, entry);
      return entry;
    }
    const imp = f.imports.get(local);
    if (!imp) throw new Error(`${file}: cannot resolve type ${name}`);
    const base = imp.from.startsWith(".") ? path.resolve(f.dir, imp.from)
                                          : path.join(NODE_MODULES, imp.from);
    return this.resolve(base + ".d.ts", imp.remote);
  }
}

const declarations = new Declarations();

// Appends "path: unknown field" for each key of `value` its declared type lacks.
function walk(value, ty, file, where, errors) {
  if (value === null || typeof value !== "object" || ty.kind === "open") return;
  if (ty.kind === "ref") {
    const { file: f, ty: t } = declarations.resolve(file, ty.name);
    return walk(value, t, f, where, errors);
  }
  if (ty.kind === "union") {  // the first member that is a structure of the same shape
    const structured = ty.members.filter((m) => m.kind !== "open");
    if (structured.length === 1) walk(value, structured[0], file, where, errors);
    return;
  }
  if (ty.kind === "array") {
    if (Array.isArray(value)) value.forEach((v, i) => walk(v, ty.item, file, `${where}/${i}`, errors));
    return;
  }
  if (Array.isArray(value)) return;  // a type error: validate() reports it
  for (const [key, v] of Object.entries(value)) {
    if (ty.kind === "map") { walk(v, ty.value, file, `${where}/${key}`, errors); continue; }
    if (!ty.props.has(key)) { errors.push(`${where}/${key}: unknown field`); continue; }
    walk(v, ty.props.get(key), file, `${where}/${key}`, errors);
  }
}

// Unknown-field errors of `obj`, whose kind is declared as interface `I<Kind>` in `dts`.
function unknownFields(obj, dts) {
  const errors = [];
  walk(obj, { kind: "ref", name: `I${obj.kind}` }, dts, "", errors);
  return errors;
}

module.exports = { unknownFields };
