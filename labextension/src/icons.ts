import { LabIcon } from '@jupyterlab/ui-components';

import vscodeSvg from '../style/icons/vscode.svg';

export const vscodeIcon = new LabIcon({ name: 'jupyter-hpc-manager:vscode', svgstr: vscodeSvg });
