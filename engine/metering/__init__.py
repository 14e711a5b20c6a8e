"""CoW-aware metering: what each sandbox really costs in memory, disk and CPU.

``smaps`` reads one QEMU process's memory (and ``pagemap`` recounts its guest-RAM copies
cheaply), ``disk`` a qcow2 backing chain, ``filesystems`` whether a memory file is RAM, ``cpu``
CPU time deltas, ``guest`` the guest's own view from its agent; ``meter`` combines them into
one ``sample.Reading`` and ``sampler`` runs that on a clock inside the engine.
"""
