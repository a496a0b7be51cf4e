#!/usr/bin/env bash
# Configures and starts Debian's Postfix as the SMTP reference of `mailroom-bench smtp`:
# smtpd on 127.0.0.1:2526 (no chroot), accepting any recipient of bench.test, writing and
# fsyncing each message into its queue before the 250 (as Mailroom does), then discarding
# it on delivery. Changes the machine's Postfix configuration: run it on a bench machine.
#
#   apt-get install postfix
#   sudo crates/bench/scripts/postfix-reference.sh
#   target/release/mailroom-bench smtp --reference 127.0.0.1:2526
set -euo pipefail
command -v postconf >/dev/null || { echo "apt-get install postfix" >&2; exit 1; }
postconf -e \
  'mydestination = bench.test' \
  'local_recipient_maps =' \
  'local_transport = discard:' \
  'default_transport = discard:' \
  'inet_interfaces = 127.0.0.1' \
  'inet_protocols = ipv4' \
  'smtpd_client_connection_count_limit = 0' \
  'smtpd_client_connection_rate_limit = 0' \
  'default_process_limit = 200' \
  'maillog_file = /var/log/postfix-bench.log'
if ! grep -q '^127.0.0.1:2526 ' /etc/postfix/master.cf; then
  echo '127.0.0.1:2526 inet n - n - - smtpd' >> /etc/postfix/master.cf
fi
postfix stop >/dev/null 2>&1 || true
postfix start
for _ in $(seq 1 50); do
  python3 -c 'import socket; socket.create_connection(("127.0.0.1", 2526), 1)' 2>/dev/null && exit 0
  sleep 0.1
done
echo "Postfix does not listen on 127.0.0.1:2526; see /var/log/postfix-bench.log" >&2
exit 1
