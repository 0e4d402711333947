import { ZxcvbnFactory } from '@zxcvbn-ts/core';
import * as zxcvbnCommon from '@zxcvbn-ts/language-common';
import * as zxcvbnEn from '@zxcvbn-ts/language-en';

/**
 * The check OpenSearch (>= 2.12) applies to OPENSEARCH_INITIAL_ADMIN_PASSWORD before it sets up
 * the security plugin, done here so a weak `iss:opensearchPassword` stops `pulumi preview/up`
 * instead of leaving a VM whose container exits at every start (and whose installer prints the
 * refused password into the container log).
 *
 * Sources (read 2026-11-27):
 * - https://docs.opensearch.org/3.9/security/configuration/demo-configuration/ ("Admin password
 *   requirements": 8 to 100 characters; an uppercase letter, a lowercase letter, a digit and a
 *   special character; a zxcvbn rating of "strong" or higher; not similar to the user name admin).
 * - opensearch-project/security, src/main/java/org/opensearch/security/tools/democonfig/
 *   SecuritySettingsConfigurer.java (`updateAdminPassword`: regex
 *   `(?=.*[A-Z])(?=.*[^a-zA-Z\\d])(?=.*[0-9])(?=.*[a-z]).{8,}`, min length 8, and the default
 *   `plugins.security.restapi.password_score_based_validation_strength` = STRONG) and
 *   .../dlic/rest/validation/PasswordValidator.java (max length 100; zxcvbn4j score >= 3 for
 *   STRONG; "similar" = any zxcvbn dictionary match from the `user_inputs` dictionary, the user
 *   name being the only user input).
 *
 * Two deliberate differences, both stricter than OpenSearch, never looser:
 * - OpenSearch's "special character" lookahead is `[^a-zA-Z\\d]` written with a doubled
 *   backslash, so a digit satisfies it; we follow the documented rule (a character that is
 *   neither a letter nor a digit).
 * - OpenSearch scores with zxcvbn4j (a port of Dropbox's zxcvbn 4.4); we use zxcvbn-ts with its
 *   common and English dictionaries, which rate the same test passwords the same way (checked
 *   against zxcvbn 4.4.2) but are not byte-for-byte the same lists.
 */

/** The only account the VM-mode cluster is set up with. */
export const OPENSEARCH_ADMIN_USER = 'admin';
export const OPENSEARCH_PASSWORD_MIN_LENGTH = 8;
export const OPENSEARCH_PASSWORD_MAX_LENGTH = 100;
/** zxcvbn score of OpenSearch's default strength, STRONG ("safely unguessable"). */
export const OPENSEARCH_PASSWORD_MIN_SCORE = 3;

let estimator: ZxcvbnFactory | undefined;

/** Built on first use: loading the dictionaries takes ~0.1 s. */
function zxcvbn(): ZxcvbnFactory {
  estimator ??= new ZxcvbnFactory({
    dictionary: { ...zxcvbnCommon.dictionary, ...zxcvbnEn.dictionary },
    graphs: zxcvbnCommon.adjacencyGraphs,
  });
  return estimator;
}

/**
 * What OpenSearch would object to in this admin password, as sentences that never quote it.
 * An empty list means OpenSearch accepts it.
 */
export function checkOpenSearchAdminPassword(pw: string): string[] {
  const problems: string[] = [];
  const length = [...pw].length;
  if (length < OPENSEARCH_PASSWORD_MIN_LENGTH) problems.push(`it has ${length} characters; at least ${OPENSEARCH_PASSWORD_MIN_LENGTH} are required`);
  if (length > OPENSEARCH_PASSWORD_MAX_LENGTH) problems.push(`it has ${length} characters; at most ${OPENSEARCH_PASSWORD_MAX_LENGTH} are allowed`);
  // OpenSearch's regex uses `.`, which matches no line break; an env file cannot carry one either.
  // eslint-disable-next-line no-control-regex
  if (/[\u0000-\u001f\u007f]/.test(pw)) problems.push('it contains a line break or another control character');
  const missing = [
    /[A-Z]/.test(pw) ? undefined : 'an uppercase letter',
    /[a-z]/.test(pw) ? undefined : 'a lowercase letter',
    /[0-9]/.test(pw) ? undefined : 'a digit',
    /[^A-Za-z0-9]/.test(pw) ? undefined : 'a special character (neither letter nor digit)',
  ].filter((m): m is string => m !== undefined);
  if (missing.length > 0) problems.push(`it lacks ${missing.join(', ')}`);
  if (length <= OPENSEARCH_PASSWORD_MAX_LENGTH) {
    const result = zxcvbn().check(pw, [OPENSEARCH_ADMIN_USER]);
    if (result.score < OPENSEARCH_PASSWORD_MIN_SCORE) {
      problems.push(
        `its strength score is ${result.score} of 4 and OpenSearch requires ${OPENSEARCH_PASSWORD_MIN_SCORE} ("strong"): ` +
          'common words, names, dates, keyboard runs and letter-for-digit swaps make it guessable',
      );
    }
    if (result.sequence.some((m) => m.pattern === 'dictionary' && 'dictionaryName' in m && m.dictionaryName === 'userInputs')) {
      problems.push(`it is too similar to the user name "${OPENSEARCH_ADMIN_USER}"`);
    }
  }
  return problems;
}
