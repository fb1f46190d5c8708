"""What a run is made of, fetched or built once and cached: kernels from Debian's archive,
guest images, boot files, livepatch modules built against each kernel's headers."""
