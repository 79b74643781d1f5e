import { LabIcon } from '@jupyterlab/ui-components';

import hpcSvg from '../style/icons/hpc.svg';
import vscodeSvg from '../style/icons/vscode.svg';

export const vscodeIcon = new LabIcon({ name: 'jupyter-hpc-manager:vscode', svgstr: vscodeSvg });

/** The sidebar tab's icon: a cluster's racks. */
export const hpcIcon = new LabIcon({ name: 'jupyter-hpc-manager:hpc', svgstr: hpcSvg });
