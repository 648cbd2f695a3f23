/*
 * arm globals the dump's page-table walk uses (sys/arm/arm/pmap-v6.c).
 */
#include "kernel.h"

vm_paddr_t kernel_l1pa;			/* the kernel's L1 page table */
