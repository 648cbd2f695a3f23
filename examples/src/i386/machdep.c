/*
 * i386 globals the dump's page-table walk uses (sys/i386/i386/pmap.c,
 * locore.s): PAE or not, and the page-directory roots.
 */
#include "kernel.h"

int pae_mode;				/* 1: PAE page tables */
uint32_t *IdlePTD_nopae;		/* non-PAE page directory */
uint64_t *IdlePDPT;			/* PAE page-directory-pointer table */
uint64_t *IdlePTD_pae;			/* PAE page directory */
u_int tramp_idleptd;			/* the trampoline's page directory */
