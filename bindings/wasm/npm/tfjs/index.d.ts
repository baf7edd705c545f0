import type * as tf from "@tensorflow/tfjs-core";
import type { OptimizerOptions, Schedule, Optimizer } from "../web/vsgd.js";

/** Options: those of vsgd's `new Optimizer(options)` and an optional schedule for group 0. */
export interface VsgdOptimizerOptions extends OptimizerOptions {
  schedule?: Schedule;
}

/** A `tf.Optimizer` whose steps are vsgd's. */
export declare class VsgdOptimizer extends tf.Optimizer {
  static get className(): string;
  constructor(options?: VsgdOptimizerOptions);
  /** The vsgd optimizer doing the steps (one tensor per tfjs variable, named after it). */
  engine: Optimizer;
  /** tfjs variable name -> vsgd tensor index. */
  tensorIds: Map<string, number>;
  applyGradients(variableGradients: tf.NamedTensorMap | tf.NamedTensor[]): void;
  /** VSGD's learned effective momentum of a variable, or undefined before its first step. */
  effectiveMomentum(variableName: string): Float32Array | Float64Array | undefined;
  /** The optimizer state in vsgd's checkpoint format. */
  saveState(): Uint8Array;
  /** Restores state written by saveState(). */
  loadState(bytes: Uint8Array | ArrayBuffer): void;
  getConfig(): tf.serialization.ConfigDict;
  dispose(): void;
}

/** `vsgd(options)`: a VsgdOptimizer, in the style of `tf.train.adam(...)`. */
export declare function vsgd(options?: VsgdOptimizerOptions): VsgdOptimizer;
