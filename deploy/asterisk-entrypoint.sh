#!/bin/sh
# Write the AMI secret and the FastAGI key from the environment (never baked into the
# image), then start.
set -eu
: "${IVR_AMI_SECRET:?set IVR_AMI_SECRET (the controller AMI user's secret)}"
: "${IVR_AGI_KEY:?set IVR_AGI_KEY (the key every AGI() passes; the controller needs the same)}"
umask 077
printf '[ivr](+)\nsecret = %s\n' "$IVR_AMI_SECRET" > /etc/asterisk/manager_secrets.conf
printf 'IVR_AGI_KEY = %s\n' "$IVR_AGI_KEY" > /etc/asterisk/ivr-agi-key.conf
for dir in /var/lib/asterisk /var/spool/asterisk /var/log/asterisk /var/run/asterisk; do
  mkdir -p "$dir"
done
exec "$@"
