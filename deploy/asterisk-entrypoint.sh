#!/bin/sh
# Write the AMI secret from the environment (never baked into the image), then start.
set -eu
: "${IVR_AMI_SECRET:?set IVR_AMI_SECRET (the controller AMI user's secret)}"
umask 077
printf '[ivr](+)\nsecret = %s\n' "$IVR_AMI_SECRET" > /etc/asterisk/manager_secrets.conf
for dir in /var/lib/asterisk /var/spool/asterisk /var/log/asterisk /var/run/asterisk; do
  mkdir -p "$dir"
done
exec "$@"
