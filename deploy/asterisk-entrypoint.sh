#!/bin/sh
# Write the AMI secret and the FastAGI key from the environment (never baked into the
# image), then start.
#   IVR_AMI_SECRET        the controller's AMI user [ivr] (required)
#   IVR_AGI_KEY           the key every AGI() passes; the controller needs the same (required)
#   IVR_AGI               the controller's FastAGI address (default agi://127.0.0.1:4573)
#   IVR_AMI_ADMIN_SECRET  tests only: adds [ivr-admin], an all-classes AMI user on
#                         loopback, as the embedded switch has. Leave unset in production.
set -eu
: "${IVR_AMI_SECRET:?set IVR_AMI_SECRET (the controller AMI user's secret)}"
: "${IVR_AGI_KEY:?set IVR_AGI_KEY (the key every AGI() passes; the controller needs the same)}"
umask 077
printf '[ivr](+)\nsecret = %s\n' "$IVR_AMI_SECRET" > /etc/asterisk/manager_secrets.conf
printf 'IVR_AGI_KEY = %s\n' "$IVR_AGI_KEY" > /etc/asterisk/ivr-agi-key.conf
if [ -n "${IVR_AMI_ADMIN_SECRET:-}" ]; then
  printf '\n[ivr-admin]\nsecret = %s\ndeny = 0.0.0.0/0.0.0.0\npermit = 127.0.0.1/255.255.255.255\nread = all\nwrite = all\n' \
    "$IVR_AMI_ADMIN_SECRET" >> /etc/asterisk/manager_secrets.conf
fi
if [ -n "${IVR_AGI:-}" ]; then
  sed -i "s|^IVR_AGI *=.*|IVR_AGI = ${IVR_AGI}|" /etc/asterisk/ivr-globals.conf
fi
for dir in /var/lib/asterisk /var/spool/asterisk /var/log/asterisk /var/run/asterisk; do
  mkdir -p "$dir"
done
exec "$@"
