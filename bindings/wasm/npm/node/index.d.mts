export * from "./vsgd.js";
/** Nothing to do in Node.js (the module is loaded); kept for code shared with browsers. */
export default function init(): Promise<unknown>;
/** Nothing to do in Node.js; kept for code shared with browsers. */
export function initSync(): unknown;
