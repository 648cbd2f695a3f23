/*
 * amd64 globals the dump's page-table walk and debuggers use
 * (sys/amd64/amd64/pmap.c).
 */
#include "kernel.h"

vm_paddr_t KPML4phys;			/* the kernel's PML4 page */
