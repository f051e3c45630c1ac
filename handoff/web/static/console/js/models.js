// The trainer's models panel: retrain on the accepted corrections (its output streamed live),
// see each model's proof (before/after), deploy one without downtime, roll back in one action.
// docs/deploys.md; the endpoints are in docs/api.md ("Trainers").
import { h } from "./dom.js";

const STATE_TEXT = { running: "Retraining\u2026", succeeded: "Retrained", refused: "Refused",
                     failed: "Failed" };

export class ModelsPanel {
  constructor(root, api, showError) {
    this.root = root;
    this.api = api;
    this.showError = showError;
    this.log = root.querySelector("#retrain-log");
    this.status = root.querySelector("#retrain-status");
    this.list = root.querySelector("#model-list");
    this.deployStatus = root.querySelector("#deploy-status");
    root.querySelector("#retrain").onclick = () => this.retrain();
    root.querySelector("#rollback").onclick = () => this.rollback();
  }

  async load() {
    try {
      const data = await this.api.request("GET", "/api/models");
      this.render(data);
    } catch (err) {
      this.showError(err);
    }
  }

  render(data) {
    this.root.querySelector("#retrain").disabled = !data.can_deploy
      || (data.retrain && data.retrain.state === "running");
    this.root.querySelector("#rollback").disabled = !data.can_deploy;
    if (data.retrain) this.showJob(data.retrain);
    if (data.deploy && data.deploy.state === "running") {
      this.deployStatus.textContent = `Deploying ${data.deploy.file}\u2026`;
    }
    if (!data.models.length) {
      this.list.replaceChildren(h("li", { class: "muted small", text: "No model known yet." }));
      return;
    }
    this.list.replaceChildren(...data.models.map((m) => this.modelItem(m, data.can_deploy)));
  }

  modelItem(model, canDeploy) {
    const regressions = (model.proof && model.proof.regressions) || [];
    const parts = [
      h("strong", { text: model.file }),
      h("span", { class: `badge ${model.live ? "live" : ""}`, text: model.live ? "live" : model.status }),
    ];
    const details = [];
    if (model.summary) details.push(h("p", { class: "small", text: model.summary }));
    if (regressions.length) {
      details.push(h("p", { class: "small warn", text: `Regressions: ${regressions.join(", ")}` }));
    }
    if (model.deployed_by) {
      details.push(h("p", { class: "muted small", text:
        `deployed by ${model.deployed_by}${model.override ? ` (override: ${model.override})` : ""}` }));
    }
    if (!model.live && canDeploy && model.status === "candidate") {
      details.push(h("button", { type: "button", class: "deploy", "data-model": model.model_id,
        onclick: () => this.deploy(model, regressions) }, "Deploy"));
    }
    return h("li", { class: "model" }, h("div", {}, ...parts), ...details);
  }

  showJob(job) {
    this.status.textContent = `${STATE_TEXT[job.state] || job.state}${job.message ? `: ${job.message}` : ""}`;
    if (job.log) this.log.textContent = job.log.join("\n");
    this.log.hidden = !this.log.textContent;
  }

  // Live pushes (main.js wires them): one line of the retraining's output, its end, a deploy step.
  onProgress(push) {
    this.log.hidden = false;
    this.log.textContent += (this.log.textContent ? "\n" : "") + push.line;
    this.log.scrollTop = this.log.scrollHeight;
  }

  onFinished(job) {
    this.showJob(job);
    this.load();
  }

  onDeployProgress(push) {
    this.deployStatus.textContent = push.line;
  }

  async retrain() {
    this.log.textContent = "";
    this.status.textContent = STATE_TEXT.running;
    try {
      await this.api.request("POST", "/api/retrain", {});
      this.root.querySelector("#retrain").disabled = true;
    } catch (err) {
      this.status.textContent = String(err.message || err);
    }
  }

  async deploy(model, regressions) {
    const body = {};
    if (regressions.length) {
      const reason = window.prompt(
        `${model.file} gets ${regressions.length} test stories wrong that the live model gets right. `
        + "Deploy anyway? Give the reason (it is logged):");
      if (!reason) return;
      body.override = reason;
    }
    this.deployStatus.textContent = `Deploying ${model.file}\u2026`;
    try {  // it runs in the background: deploy_progress and deploy_finished tell the rest
      await this.api.request("POST", `/api/models/${encodeURIComponent(model.model_id)}/deploy`, body);
    } catch (err) {
      this.deployStatus.textContent = String(err.message || err);
    }
  }

  async rollback() {
    this.deployStatus.textContent = "Rolling back\u2026";
    try {
      const { deploy } = await this.api.request("POST", "/api/models/rollback");
      this.deployStatus.textContent = `Rolling back to ${deploy.file}\u2026`;
    } catch (err) {
      this.deployStatus.textContent = String(err.message || err);
    }
  }

  onDeployFinished(job) {
    this.deployStatus.textContent = job.state === "succeeded"
      ? `${job.message}.` : `Deploy failed: ${job.message}`;
    this.load();
  }
}
