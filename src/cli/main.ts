#!/usr/bin/env node
/** Process entry of the `geodr` command: `node dist/src/cli/main.js <command> ...`. */
import { registerDevCommands } from '../deploy/cli.js';
import { run } from './program.js';

process.exitCode = await run(process.argv, registerDevCommands);
