/**
 * stepup-agent-client: the Node.js client of stepup-agent.
 *
 *   import { StepUpClient, createStepUpFetch, isCancelled } from 'stepup-agent-client';
 *   const agent = new StepUpClient();
 *   if (await agent.isStepUpRequired('wallet:export')) {
 *     await agent.promptStepUpAuth({ requestedScopes: ['wallet:export'] });
 *   }
 *
 * The protocol is docs/protocol.md in the stepup-agent repository.
 */
export * from './client.js';
export * from './errors.js';
export * from './fetch.js';
