"""The kernels a run boots: their definitions, choosing a version, fetching and
verifying the packages, the unpacked tree, the cache of them, their source, a
local kernel."""
