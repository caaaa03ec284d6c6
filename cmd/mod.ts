/** The command line interface. */
export { buildProgram, runCli } from "./main.ts";
