/** The fx icon of the side panel's tab. */
import { LabIcon } from '@jupyterlab/ui-components';

const svg = `<svg xmlns="http://www.w3.org/2000/svg" width="16" height="16" viewBox="0 0 16 16">
  <text class="jp-icon3" fill="#616161" x="8" y="12" text-anchor="middle"
        font-family="Georgia, serif" font-style="italic" font-weight="bold" font-size="11">fx</text>
</svg>`;

export const fxIcon = new LabIcon({ name: 'fx-jupyter:fx', svgstr: svg });
