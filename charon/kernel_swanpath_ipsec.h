/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

/**
 * @defgroup kernel_swanpath_ipsec_i kernel_swanpath_ipsec
 * @{ @ingroup kernel_swanpath
 */

#ifndef KERNEL_SWANPATH_IPSEC_H_
#define KERNEL_SWANPATH_IPSEC_H_

#include <library.h>
#include <kernel/kernel_ipsec.h>

typedef struct kernel_swanpath_ipsec_t kernel_swanpath_ipsec_t;

/**
 * kernel_ipsec_t implementation that hands every SA and policy to swanpathd.
 */
struct kernel_swanpath_ipsec_t {

	/**
	 * Implements kernel_ipsec_t interface
	 */
	kernel_ipsec_t interface;
};

/**
 * Create a kernel-swanpath ipsec interface instance.
 *
 * @return			kernel_swanpath_ipsec_t instance
 */
kernel_swanpath_ipsec_t *kernel_swanpath_ipsec_create();

#endif /** KERNEL_SWANPATH_IPSEC_H_ @}*/
