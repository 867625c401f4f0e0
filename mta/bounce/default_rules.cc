// The shipped classification rules. Tried after an operator's own file, in
// this order: the texts of the large providers and blocklists first (their
// codes are often generic, their words are not), then RFC 3463 enhanced
// codes, then bare reply codes. Matched case-insensitively against
// "CODE ENHANCED TEXT".
#include "mta/bounce/classifier.h"

namespace peregrine::bounce {

absl::string_view DefaultRules() {
  return R"toml(# Peregrine's built-in bounce classification rules.
# Each [[rule]] names a category and RE2 patterns, matched anywhere in
# "CODE ENHANCED TEXT" without regard to case; the first match wins.

# --- Authentication (SPF, DKIM, DMARC) -------------------------------------
[[rule]]
category = "auth_failure"
patterns = [
  '\b5\.7\.2[3-9]\b',                     # RFC 7372: SPF, DKIM, DMARC
  '\b5\.7\.509\b',                        # Outlook: DMARC
  'does not pass authentication checks',  # Gmail
  'sender is unauthenticated',            # Yahoo
  '\b(spf|dkim|dmarc)\b.*\b(fail|failed|failure|reject|rejected|policy|not pass|does not|didn.t)',
  '\b(fail|failed|failure|reject|rejected|does not pass|not pass)\b.*\b(spf|dkim|dmarc)\b',
  'unauthenticated (email|mail|sender)',
]

# --- TLS ----------------------------------------------------------------------
[[rule]]
category = "tls_required"
patterns = [
  'must issue a starttls',
  '\bstarttls\b.*\b(required|first)\b',
  '\btls\b.*\b(required|mandatory)\b',
  'encryption (is )?required',
  '\b[45]\.7\.(10|11)\b',
  '^4\d\d 4\.7\.5\b',
]

# --- Blocklists and sending reputation ----------------------------------------
[[rule]]
category = "ip_reputation"
patterns = [
  'spamhaus|spamcop|barracudacentral|sorbs|uceprotect|cbl\.abuseat|psbl|spamrats|mailspike|invaluement',
  'blocked using',
  'block ?list|black ?list|\bdnsbl\b|\brbl\b',
  '\[BL\d+\]',                                   # Yahoo
  '\(S3150\)|\(S3140\)|\bS3115\b',              # Outlook block lists
  '\b5\.7\.60[56]\b',                            # Outlook: banned sending IP
  'banned sending ip',
  '(poor|low|bad) (ip |sender |sending )?reputation',
  'reputation (of|for) (the |your )?(ip|sending|sender)',
  'dynamic reputation',                          # Proofpoint
  'barracuda reputation',
  'cloudmark sender intelligence',
  'not allowed to send from (your|this) ip',
  'ip address (is )?(blacklisted|blocked|listed)',
  '\[TSS09\]',                                   # Yahoo: IP listed
  'unusual rate of unsolicited mail originating from your ip',  # Gmail
  'traffic not accepted from this ip|\b5\.7\.708\b',        # Outlook
  '\bblocked - see\b',                            # Apple and others
]

# --- Rate limits and throttling -----------------------------------------------
[[rule]]
category = "rate_limited"
patterns = [
  'rate limit|ratelimit|rate-limit',
  'greylist|graylist|come back later',
  'too many (messages|connections|recipients|mails|emails|concurrent)',
  'receiving mail at a rate',                    # Gmail 4.2.1
  'unusual rate',                                # Gmail 421 4.7.0
  'try (again )?later|temporarily deferred|deferred due to',
  '\[TSS0[1-8]\]|\[TS0\d\]',                     # Yahoo deferrals
  'server busy',                                 # Outlook 4.7.500
  'frequency limited|frequency limit',           # QQ
  'throttl',
  'exceeded (the )?(maximum )?(sending|connection|message) (rate|limit)',
  '\b4\.7\.(50[0-9]|650)\b',
  'resources temporarily unavailable|service (is )?(currently )?unavailable',
]

# --- Spam and content -----------------------------------------------------------
[[rule]]
category = "spam_block"
patterns = [
  'spam|unsolicited|junk mail|bulk mail',
  '\bDT:SPM\b',                                  # QQ
  'suspicious|looks like (spam|phishing)',
  'phishing',
  'local policy violation',                     # Cloudmark
]

[[rule]]
category = "content_rejected"
patterns = [
  'content (denied|rejected|filter|policy)',
  'content presents|potential security issue',
  'message content',
  'virus|malware|infected|dangerous|attachment (type )?(is )?(not allowed|blocked|rejected|forbidden)',
  'banned (attachment|file|content)',
  'message (was )?rejected (due to|because of) (its )?content',
  '\b5\.6\.\d+\b',
  '\b5\.7\.7\b',
]

# --- Mailbox full ---------------------------------------------------------------
[[rule]]
category = "mailbox_full"
patterns = [
  'over (quota|the quota)|quota (exceeded|full)|exceeded (its|the|his|her) (storage|quota)',
  'mailbox (is )?full|mailbox size limit|mail ?box (has )?exceeded|insufficient (disk )?space|storage (space )?(is )?full',
  'out of storage|not enough (storage|space)',
  '\b[45]\.2\.2\b',
]

# --- Size ---------------------------------------------------------------------
[[rule]]
category = "message_too_large"
patterns = [
  'message (size )?(is )?too (large|big)',
  '(message|mail) size (limit )?(exceed|is too)|message size limit',
  'exceed(s|ed)? (the )?(maximum )?(allowed )?message size',
  'message file too big|too much mail data',
  '\b[45]\.3\.4\b',
  '\b5\.2\.3\b',
]

# --- Mailboxes that exist no more or are off --------------------------------------
[[rule]]
category = "inactive_mailbox"
patterns = [
  'account (has been |is )?(disabled|deactivated|suspended|inactive|locked|blocked|frozen|expired)',
  'mailbox (has been |is )?(disabled|deactivated|suspended|inactive|locked|frozen)',
  'user (account )?(is )?(disabled|inactive|suspended|deactivated)',
  'inactive (user|account|mailbox)',
  'no longer (active|available|in use|exists|valid)',
  'is disabled',
  '\b5\.2\.1\b',
]

# --- Outlook's "recipient not found" carries the null MX code --------------
[[rule]]
category = "invalid_recipient"
patterns = ['RecipientNotFound', 'Recipient not found by SMTP address lookup']

# --- Domains that do not exist or take no mail ----------------------------------
[[rule]]
category = "bad_domain"
patterns = [
  '\b5\.1\.(2|10)\b',
  '\b5\.4\.(4|6|0)\b',
  'no such domain|domain (name )?(not found|does not exist|is not valid)|host (or domain name )?not found',
  'accepts no mail|null mx',
  'no mail exchanger|no mx (record|host)',
  'unrouteable|unroutable',
]

# --- Recipients that do not exist -----------------------------------------------------
[[rule]]
category = "invalid_recipient"
patterns = [
  '\b5\.1\.(1|0|6|3)\b',
  'does not exist|doesn.t exist|not exist',
  "doesn't have a \\S+ account",                   # Yahoo
  'user(name)? (is )?(unknown|not found|not known)|unknown (user|recipient|mailbox)',
  'no such (user|recipient|mailbox|address|account)',
  'recipient (address )?(rejected|not found|unknown|invalid|does not exist)',
  'mailbox (not found|unavailable|does not exist|not available|unknown|name not allowed)',
  'invalid (mailbox|recipient|address|user)',
  '(recipient|destination) address (is )?(rejected|unknown|invalid|not found)|address (is )?(unknown|invalid|not found)',
  'bad (destination )?(mailbox|recipient) address',
  'user not found|account not found|not our customer',
  'mailbox not found or access denied',          # QQ
  'requested action not taken: mailbox unavailable',
  'access denied\. AS\(2018',                     # Outlook
  'recipient name is not recognized|not listed in (the )?(domino|public|address|global)', # Exchange, Domino
  'no mailbox here by that name|addressee unknown|unknown address',
]

# --- DNS trouble (transient) ------------------------------------------------------
[[rule]]
category = "dns_failure"
patterns = [
  '\b4\.4\.3\b',
  'dns (lookup |look-up )?(fail|error|timeout|timed out)',
  'mx look-?up .*failed|servfail',
  'no address',
]

# --- Connections -----------------------------------------------------------------
[[rule]]
category = "connection"
patterns = [
  '\b4\.4\.[0-27]\b',
  'connection (refused|timed out|reset|closed|lost|dropped)',
  'timed out|timeout',
  'closed the connection|broken pipe|network (is )?unreachable|no route to host',
  'lost connection',
]

# --- Policy (catch-alls for 5.7.x and the words providers use) ---------------
[[rule]]
category = "policy"
patterns = [
  'polic(y|ies)',
  'not (allowed|permitted|authorized)|prohibited|administrative',
  'relay(ing)? (access )?(denied|not permitted)',
  'access denied|denied',
  'ptr record|reverse (dns|lookup)|rdns',
  '\b[45]\.7\.\d+\b',
]

# --- Bare codes when nothing else says more ----------------------------------------
[[rule]]
category = "mailbox_full"
patterns = ['^452 ', '^552 ']

[[rule]]
category = "rate_limited"
patterns = ['^421 ', '^4\d\d 4\.7\.\d']

[[rule]]
category = "invalid_recipient"
patterns = ['^550 (requested action not taken|mailbox)']
)toml";
}

}  // namespace peregrine::bounce
