// Validates the ServiceMonitor and PrometheusRule objects of rendered manifests against the
// prometheus-operator CRD schemas shipped in @kubernetes-models/prometheus-operator (npm),
// and writes each PrometheusRule's spec to OUT_DIR/<name>.rules.yaml for `promtool check rules`.
//
//   node crds.mjs OUT_DIR RENDERED.json...   (each file: a JSON array of objects)
import { readFileSync, writeFileSync } from "node:fs";
import { ServiceMonitor, PrometheusRule } from "@kubernetes-models/prometheus-operator/monitoring.coreos.com/v1";

const [outDir, ...files] = process.argv.slice(2);
const models = { ServiceMonitor, PrometheusRule };
let failed = false;
const seen = { ServiceMonitor: 0, PrometheusRule: 0 };
for (const file of files) {
  for (const obj of JSON.parse(readFileSync(file, "utf8"))) {
    if (obj.apiVersion !== "monitoring.coreos.com/v1") continue;
    const Model = models[obj.kind];
    if (!Model) {
      console.error(`crds.mjs: ${file}: no schema for ${obj.kind}`);
      failed = true;
      continue;
    }
    try {
      new Model(obj).validate();
      seen[obj.kind] += 1;
      console.error(`  ${file}: ${obj.kind}/${obj.metadata.name} valid against the CRD schema`);
    } catch (e) {
      console.error(`crds.mjs: ${file}: ${obj.kind}/${obj.metadata.name} INVALID: ${e.message}`);
      failed = true;
    }
    if (obj.kind === "PrometheusRule") {
      const base = file.replace(/^.*\//, "").replace(/\.json$/, "");
      // JSON is YAML: promtool reads it as a rule file.
      writeFileSync(`${outDir}/${base}-${obj.metadata.name}.rules.yaml`, JSON.stringify(obj.spec, null, 2));
    }
  }
}
// A self-test, so a validator that accepts everything cannot pass silently.
try {
  new ServiceMonitor({ metadata: { name: "bad" }, spec: { selector: {}, endpoints: [{ port: "http", interval: "soon" }] } }).validate();
  console.error("crds.mjs: the CRD validator accepted an invalid ServiceMonitor (self-test)");
  failed = true;
} catch {
  // expected
}
if (seen.ServiceMonitor === 0 || seen.PrometheusRule === 0) {
  console.error(`crds.mjs: expected at least one ServiceMonitor and one PrometheusRule, saw ${JSON.stringify(seen)}`);
  failed = true;
}
process.exit(failed ? 1 : 0);
