// vsgd/tfjs: a TensorFlow.js optimizer run by this package's engine. tfjs computes the
// gradients; each step hands them to a vsgd `Optimizer` (one registered tensor per tfjs
// variable, named after it) and assigns the updated values back.
//
//   // const optimizer = tf.train.adam(0.001);
//   const optimizer = new VsgdOptimizer({ algorithm: "vsgd", lr: 0.01 });
//   model.compile({ optimizer, loss: "categoricalCrossentropy" });   // or optimizer.minimize(f)
//
// `@tensorflow/tfjs-core` is a peer dependency (installed with `@tensorflow/tfjs`). In browsers,
// call the package's `init()` before creating an optimizer.
import * as tfModule from "@tensorflow/tfjs-core";
import { Optimizer } from "vsgd";

// The namespace of tfjs-core, whether it came as an ES module or as CommonJS.
const tf = tfModule.Optimizer ? tfModule : tfModule.default;

/** A `tf.Optimizer` whose steps are vsgd's (any algorithm: vsgd, constant_vsgd, adam, adamw, sgdm). */
export class VsgdOptimizer extends tf.Optimizer {
  /** The name tfjs serializes the optimizer under. */
  static get className() {
    return "VsgdOptimizer";
  }

  /**
   * @param {object} [options] as for vsgd's `new Optimizer(options)`: `{algorithm, lr, ...}`
   *   with the core's names and defaults, and `schedule` (optional, as `setSchedule` takes it).
   */
  constructor(options = {}) {
    super();
    this.options = { ...options };
    const { schedule, ...core } = this.options;
    this.engine = new Optimizer(core);
    if (schedule !== undefined) this.engine.setSchedule(0, schedule);
    /** tfjs variable name -> vsgd tensor index */
    this.tensorIds = new Map();
  }

  /** Applies one step for the given gradients (what `minimize` and `model.fit` call). */
  applyGradients(variableGradients) {
    const entries = Array.isArray(variableGradients)
      ? variableGradients.map((v) => [v.name, v.tensor])
      : Object.entries(variableGradients);
    const registered = tf.engine().registeredVariables;
    for (const [name, grad] of entries) {
      if (grad == null) continue;
      const variable = registered[name];
      if (variable === undefined) throw new Error(`no tfjs variable named '${name}'`);
      if (!variable.trainable) continue;
      if (variable.dtype !== "float32") {
        throw new Error(`variable '${name}' is ${variable.dtype}; vsgd steps float32 variables`);
      }
      let id = this.tensorIds.get(name);
      if (id === undefined) {
        id = this.engine.addTensor(variable.shape, { name });
        this.tensorIds.set(name, id);
      }
      // Copies: the CPU backend's dataSync() may return the tensor's own storage.
      const param = Float32Array.from(variable.dataSync());
      const g = grad.dataSync();
      this.engine.stepTensor(id, param, g instanceof Float32Array ? g : Float32Array.from(g));
      variable.assign(tf.tensor(param, variable.shape, "float32"));
    }
    this.incrementIterations();
  }

  /** vsgd's learned effective momentum of a variable (VSGD only), or undefined before its first step. */
  effectiveMomentum(variableName) {
    const id = this.tensorIds.get(variableName);
    return id === undefined ? undefined : this.engine.effectiveMomentum(id);
  }

  /** The optimizer state in vsgd's checkpoint format (parameters are the model's: save them too). */
  saveState() {
    return this.engine.save();
  }

  /** Restores state written by `saveState()` (tensors are matched to variables by name). */
  loadState(bytes) {
    const engine = Optimizer.load(bytes);
    const ids = new Map();
    for (let k = 0; k < engine.numTensors; k++) {
      const { name } = engine.tensorInfo(k);
      if (name !== null) ids.set(name, k);
    }
    this.engine.free();
    this.engine = engine;
    this.tensorIds = ids;
  }

  /** tfjs weight export: the state lives in vsgd's checkpoint (see saveState). */
  async getWeights() {
    return [await this.saveIterations()];
  }

  async setWeights(weightValues) {
    await this.extractIterations(weightValues);
  }

  getConfig() {
    return { ...this.options };
  }

  static fromConfig(cls, config) {
    return new cls(config);
  }

  /** Frees the wasm state (the optimizer cannot be used afterwards). */
  dispose() {
    this.engine.free();
    super.dispose();
  }
}

tf.serialization.registerClass(VsgdOptimizer);

/** `vsgd(options)`: a VsgdOptimizer, in the style of `tf.train.adam(...)`. */
export function vsgd(options = {}) {
  return new VsgdOptimizer(options);
}
