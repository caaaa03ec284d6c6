/** This program's release and the highest cluster level it supports. */
import { VERSION } from "../version.ts";
import { levelOfVersion } from "./levels.ts";

/**
 * TEST HOOK, not for production: `NOVACTL_TEST_PRETEND_RELEASE=0.1.0` makes this program
 * check data dirs and apply upgrades as that release would (its version and maximum level),
 * so a test can prove that a future release refuses a data dir newer than itself.
 */
export const PRETEND_RELEASE_ENV = "NOVACTL_TEST_PRETEND_RELEASE";

function pretended(): string | undefined {
  try {
    return Deno.env.get(PRETEND_RELEASE_ENV) || undefined;
  } catch {
    return undefined; // no env permission: a library use, never a test
  }
}

/** The version this program runs as (its release, unless the test hook pretends another). */
export const PROGRAM_VERSION: string = pretended() ?? VERSION;

/** The highest cluster level this program can apply. */
export const PROGRAM_MAX_LEVEL: number = levelOfVersion(PROGRAM_VERSION);
