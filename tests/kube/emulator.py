"""A Kubernetes API server for nodewall's tests: kmock's in-memory emulator serving Nodes,
EndpointSlices and NodewallNodeStatus objects. Usage: emulator.py HOST PORT; prints
`listening HOST:PORT` once it accepts connections, and serves until killed."""

import asyncio
import sys

import kmock

RESOURCES = {
    "v1/nodes": kmock.ResourceInfo(kind="Node", namespaced=False),
    "discovery.k8s.io/v1/endpointslices": kmock.ResourceInfo(kind="EndpointSlice", namespaced=True),
    "nodewall.io/v1alpha1/nodewallnodestatuses": kmock.ResourceInfo(kind="NodewallNodeStatus", namespaced=False),
}


async def main(host: str, port: int) -> None:
    async with kmock.KubernetesEmulator() as api, kmock.Server(api, host=host, port=port) as server:
        for name, info in RESOURCES.items():
            api.resources[name] = info
        print(f"listening {server.host}:{server.port}", flush=True)
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], int(sys.argv[2])))
