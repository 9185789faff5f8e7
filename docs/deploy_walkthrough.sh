#!/usr/bin/env bash
# docs/deploy.md "Deploy on several devices", followed literally: host A = 127.0.0.2 (SuperLink + edge-a + the
# operator's flwr CLI), host B = 127.0.0.3 (edge-b). Each "host" has its own folder and FLWR_HOME.
set -euo pipefail
# Run from the repository root (the app `flwr run .` submits): bash docs/deploy_walkthrough.sh
REPO=${REPO:-$PWD}
export PATH=/work/main/.venv/bin:$PATH PYTHONPATH=$REPO FLWR_TELEMETRY_ENABLED=0 FLWR_DISABLE_UPDATE_CHECK=1
export FEDCOMPRESS_LAUNCH_TAG=mh-walkthrough-$$
W=${W:-/tmp/mh}; rm -rf $W/hostA $W/hostB $W/creds; mkdir -p $W/hostA $W/hostB
PORT=${PORT:-29092}
cleanup() {  # stop every process this walkthrough started (they carry its tag)
  python -c "import os; from fedcompress.launch.process import tagged, kill_tree; kill_tree(tagged(os.environ['FEDCOMPRESS_LAUNCH_TAG']) - {os.getpid(), os.getppid()})"
}
trap cleanup EXIT
# --- 1. operator: credentials
python -m fedcompress.launch.certs $W/creds --host 127.0.0.2 --node edge-a --node edge-b
# --- 2. copy: which files go where
cp $W/creds/ca.crt $W/creds/superlink/server.pem $W/creds/superlink/server.key $W/hostA/
cp $W/creds/supernodes/edge-a $W/creds/supernodes/edge-a.pub $W/creds/supernodes/edge-b.pub $W/hostA/
cp $W/creds/ca.crt $W/creds/supernodes/edge-b $W/hostB/
chmod 600 $W/hostA/server.key $W/hostA/edge-a $W/hostB/edge-b
# --- 3. host A: SuperLink
cd $W/hostA
FLWR_HOME=$W/hostA/flwr-superlink flower-superlink --host 127.0.0.2 --port $PORT \
  --ssl-ca-certfile ca.crt --ssl-certfile server.pem --ssl-keyfile server.key \
  --enable-supernode-auth --database superlink.db --disable-runtime-dependency-installation > superlink.log 2>&1 &
for i in $(seq 60); do (echo > /dev/tcp/127.0.0.2/$PORT) 2>/dev/null && break; sleep 1; done
# --- 4. host A: the operator's connection, then register both SuperNodes' public keys
export FLWR_HOME=$W/hostA/flwr-cli; mkdir -p $FLWR_HOME
cat > $FLWR_HOME/config.toml <<TOML
[superlink.prod]
address = "127.0.0.2:$PORT"
root-certificates = "$W/hostA/ca.crt"
TOML
flwr supernode register edge-a.pub prod --name edge-a
flwr supernode register edge-b.pub prod --name edge-b
flwr supernode list prod
# --- 5. each SuperNode on its host
(cd $W/hostA && FLWR_HOME=$W/hostA/flwr-edge-a flower-supernode --superlink 127.0.0.2:$PORT \
  --root-certificates ca.crt --auth-supernode-private-key edge-a --host 127.0.0.2 --port 29094 \
  --node-config "partition-id=0 num-partitions=2" > edge-a.log 2>&1 &)
(cd $W/hostB && FLWR_HOME=$W/hostB/flwr-edge-b flower-supernode --superlink 127.0.0.2:$PORT \
  --root-certificates ca.crt --auth-supernode-private-key edge-b --host 127.0.0.3 --port 29094 \
  --node-config "partition-id=1 num-partitions=2" > edge-b.log 2>&1 &)
sleep 15
# --- 6. check: both online (connected and authenticated)
flwr supernode list prod
python -m fedcompress.launch.diagnose 127.0.0.2:$PORT --root-certificates $W/hostB/ca.crt
# --- 7. run the app from the operator's checkout
cd $REPO
flwr run . prod --stream --run-config "num-partitions=2 clients-per-round=2 num-server-rounds=2 run-dir=\"$W/run\" uplink=\"topk(0.05) > ef > uniform(4) > entropy\""
cat $W/run/summary.json
