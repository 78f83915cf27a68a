/*
 * Copyright (C) 2025 swanpath authors
 *
 * This program is free software; you can redistribute it and/or modify it
 * under the terms of the GNU General Public License as published by the
 * Free Software Foundation; either version 2 of the License, or (at your
 * option) any later version.
 */

/**
 * @defgroup kernel_swanpath kernel_swanpath
 * @ingroup cplugins
 *
 * @defgroup kernel_swanpath_plugin kernel_swanpath_plugin
 * @{ @ingroup kernel_swanpath
 */

#ifndef KERNEL_SWANPATH_PLUGIN_H_
#define KERNEL_SWANPATH_PLUGIN_H_

#include <library.h>
#include <plugins/plugin.h>

typedef struct kernel_swanpath_plugin_t kernel_swanpath_plugin_t;

/**
 * Plugin handing IPsec SAs and policies to the swanpath DPDK fast path.
 */
struct kernel_swanpath_plugin_t {

	/**
	 * implements plugin interface
	 */
	plugin_t plugin;
};

#endif /** KERNEL_SWANPATH_PLUGIN_H_ @}*/
